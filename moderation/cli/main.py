"""The ``moderation`` command."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from moderation.cli import dev, models, service
from moderation.config import Settings
from moderation.contract.errors import ModerationError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moderation", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)
    service.add_commands(sub)  # moderate, policies, worker, produce
    dev.add_commands(sub)  # demo, chaos, bench, dev
    models.add_commands(sub)  # models ...
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s", stream=sys.stderr)
    if not args.verbose:  # kafka-python narrates every connection at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        return int(args.func(args, Settings()))
    except ModerationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())


if __name__ == "__main__":
    raise SystemExit(main())
