"""Commands for running and operating the service: moderate, policies, worker, produce."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moderation.cli.common import encoder_for
from moderation.config import Settings


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


def cmd_policies(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.edges.policy_files import load_policy_dir
    from moderation.edges.policy_store import RedisPolicyStore, apply_policies

    if args.action == "list":
        stored = RedisPolicyStore.from_settings(settings.redis).load()
        print(f"version {stored.version}  model {stored.model}")
        for p in stored.policies.policies:
            print(f"  {p.name:<20} threshold {p.threshold:.3f}  {len(p.prompts)} prompts, "
                  f"{len(p.counter_prompts)} counter-prompts  action {p.action}")
        return 0
    policies = load_policy_dir(Path(args.dir or settings.policies.dir))
    if args.action == "validate":
        print(f"ok: {len(policies.policies)} policies ({', '.join(policies.names)})")
        return 0
    encoder = encoder_for(settings, args.local, None)
    version = apply_policies(policies, encoder, RedisPolicyStore.from_settings(settings.redis))
    print(f"applied {len(policies.policies)} policies as version {version}")
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

    pol = sub.add_parser("policies", help="validate, apply (to Redis) or list policy sets")
    pol.add_argument("action", choices=["validate", "apply", "list"])
    pol.add_argument("dir", nargs="?", help="policy directory (default: settings, 'policies')")
    pol.add_argument("--local", action="store_true",
                     help="apply: embed prompts in-process instead of through Triton")
    pol.set_defaults(func=cmd_policies)

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

