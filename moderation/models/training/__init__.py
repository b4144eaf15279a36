"""Training and evaluation of the demo model (not needed to serve)."""
