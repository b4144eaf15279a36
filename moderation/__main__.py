"""``python -m moderation`` is the ``moderation`` command."""

from moderation.cli.main import main

raise SystemExit(main())
