"""``python -m moderation`` is the ``moderation`` command."""

from moderation.cli import main

raise SystemExit(main())
