"""Commands for running and operating the service: moderate, policies, worker, produce."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from moderation.cli.common import encoder_for
from moderation.config import Settings
from moderation.contract.errors import ConfigError

if TYPE_CHECKING:
    from moderation.core.policy import PolicySet
    from moderation.edges.policy_store import RedisPolicyStore


def cmd_moderate(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.edges.policy_files import load_policy_dir
    from moderation.tools.moderate import format_results, moderate_files

    policies = load_policy_dir(Path(args.policies or settings.policies.dir))
    encoder = encoder_for(settings, args.local, args.bundle)
    results = moderate_files([Path(f) for f in args.files], encoder,
                             policies, settings.images.limits())
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(format_results(results))
    return 1 if any(r.error for r in results) else 0


def _author(args: argparse.Namespace) -> str:
    return str(args.author or os.environ.get("USER") or os.environ.get("LOGNAME") or "unknown")


def cmd_policies(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.edges.policy_files import load_policy_dir
    from moderation.edges.policy_store import RedisPolicyStore, apply_policies

    if args.action in ("list", "history", "rollback"):
        return _stored_policies(args, RedisPolicyStore.from_settings(settings.redis))
    policies = load_policy_dir(Path(args.dir or settings.policies.dir))
    if args.action == "validate":
        print(f"ok: {len(policies.policies)} policies ({', '.join(policies.names)})")
        return 0
    if args.action == "backtest":
        return _backtest(args, settings, policies)
    store = RedisPolicyStore.from_settings(settings.redis)
    if args.action == "diff":
        from moderation.core.policy_diff import diff_sets, format_diff

        current = store.load()
        print(f"changes from version {current.version} to {args.dir or settings.policies.dir}:")
        print(format_diff(diff_sets(current.policies, policies)))
        return 0
    encoder = encoder_for(settings, args.local, None)
    version = apply_policies(policies, encoder, store, _author(args), args.message or "")
    print(f"applied {len(policies.policies)} policies as version {version}")
    return 0


def _backtest(args: argparse.Namespace, settings: Settings, draft: PolicySet) -> int:
    from moderation.console.report import format_report
    from moderation.console.service import Console

    console = Console.from_settings(settings, encoder_for(settings, args.local, None))
    report = console.backtest(draft, args.last, parse_duration(args.since) if args.since
                              else None)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0


def parse_duration(text: str) -> float:
    """``90s``, ``30m``, ``24h``, ``7d`` (or plain seconds) -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
    number, unit = (text[:-1], text[-1]) if text[-1:] in units else (text, "s")
    try:
        return float(number) * units[unit]
    except ValueError:
        raise ConfigError(f"--since {text!r}: expected a duration such as 90s, 30m, 24h, "
                          "7d") from None


def cmd_console(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.console.app import serve
    from moderation.console.service import Console

    serve(settings, Console.from_settings(settings, encoder_for(settings, False, None)))
    return 0


def _stored_policies(args: argparse.Namespace, store: RedisPolicyStore) -> int:
    if args.action == "list":
        stored = store.load()
        print(f"version {stored.version}  model {stored.model}")
        for p in stored.policies.policies:
            print(f"  {p.name:<20} threshold {p.threshold:.3f}  {len(p.prompts)} prompts, "
                  f"{len(p.counter_prompts)} counter-prompts  action {p.action}")
        return 0
    if args.action == "rollback":
        if not (args.dir or "").isdigit():
            raise ConfigError("policies rollback VERSION: VERSION is a number "
                              "(moderation policies history lists them)")
        version = store.rollback(int(args.dir), _author(args), args.message or "")
        print(f"version {args.dir} is current again, as version {version}")
        return 0
    entries = store.history()
    if args.json:
        print(json.dumps([asdict(e) for e in entries], indent=2))
        return 0
    current = store.current_version()
    for e in entries:
        restored = f" (rollback to {e.rollback_of})" if e.rollback_of is not None else ""
        mark = "*" if e.version == current else " "
        print(f"{mark} v{e.version:<4} {e.applied_at}  {e.author or '-':<12} "
              f"{len(e.policies)} policies  {e.message or '-'}{restored}")
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.worker.wiring import run_worker

    run_worker(settings, idle_exit_s=args.idle_exit)
    return 0


def cmd_produce(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.tools.produce import produce_files

    for p in produce_files(settings.kafka, [Path(f) for f in args.files], args.id_prefix,
                           raw=args.raw, topic=args.topic):
        print(f"{p.upload_id}  {p.path}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("moderate", help="score image files against the policies")
    m.add_argument("files", nargs="+", metavar="FILE")
    m.add_argument("--local", action="store_true", help="run the model in-process, no Triton")
    m.add_argument("--json", action="store_true", help="print JSON instead of a table")
    m.add_argument("--bundle", help="bundle for --local (default: settings, 'demo')")
    m.add_argument("--policies", help="policy directory (default: settings, 'policies')")
    m.set_defaults(func=cmd_moderate)

    pol = sub.add_parser("policies", help="validate, apply (to Redis), list, diff, backtest, "
                         "roll back policy sets and show their history")
    pol.add_argument("action", choices=["validate", "apply", "list", "diff", "backtest",
                                        "history", "rollback"])
    pol.add_argument("dir", nargs="?", help="policy directory (default: settings, 'policies'); "
                     "rollback: the VERSION to make current again")
    pol.add_argument("--local", action="store_true",
                     help="apply: embed prompts in-process instead of through Triton")
    pol.add_argument("-m", "--message", help="apply, rollback: why, for the history")
    pol.add_argument("--author", help="apply, rollback: who (default: $USER)")
    pol.add_argument("--json", action="store_true", help="history, backtest: print JSON")
    window = pol.add_mutually_exclusive_group()
    window.add_argument("--last", type=int, metavar="N",
                        help="backtest: on the last N recent uploads only")
    window.add_argument("--since", metavar="DURATION",
                        help="backtest: on uploads of the last DURATION only (90s, 30m, 24h)")
    pol.set_defaults(func=cmd_policies)

    con = sub.add_parser("console", help="serve the policy console: web page and HTTP API "
                         "(MODERATION_CONSOLE__*)")
    con.set_defaults(func=cmd_console)

    w = sub.add_parser("worker", help="consume uploads, publish decisions (runs until SIGTERM)")
    w.add_argument("--idle-exit", type=float, metavar="SECONDS",
                   help="exit after SECONDS owning partitions with no new upload and "
                   "nothing in flight")
    w.set_defaults(func=cmd_worker)

    pr = sub.add_parser("produce", help="send image files as upload events")
    pr.add_argument("files", nargs="+", metavar="FILE")
    pr.add_argument("--id-prefix", default="", help="upload id = prefix + file stem")
    pr.add_argument("--raw", action="store_true",
                    help="send raw image bytes with header upload-id instead of JSON")
    pr.add_argument("--topic", help="default: settings (uploads)")
    pr.set_defaults(func=cmd_produce)

