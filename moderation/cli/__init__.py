"""The ``moderation`` command, one module per command group."""
