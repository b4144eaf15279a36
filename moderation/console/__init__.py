"""The policy console: an HTTP API and a web page for the policy team."""
