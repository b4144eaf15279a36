"""The wire contract: upload events, decisions, dead letters, and the error types."""
