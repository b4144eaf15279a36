"""Developer commands on the embedded stack: demo, chaos, bench, dev."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from moderation.config import Settings
from moderation.contract.errors import ConfigError


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.devtools.demo import run_demo

    samples = sorted(Path(args.samples).glob("*.*"))
    if not samples:
        raise ConfigError(f"no sample images in {args.samples}")
    return run_demo(settings, samples, Path(args.policies or settings.policies.dir),
                    keep_stack=args.keep_stack, timeout_s=args.timeout, images=args.images,
                    console=args.console)


def cmd_chaos(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.devtools import stack
    from moderation.devtools.chaos import run_chaos
    from moderation.devtools.demo import stack_settings

    settings, _, started = stack_settings(settings)
    try:
        report = run_chaos(settings, settings.dev.state_dir, sorted(Path(args.samples).glob("*.*")),
                           Path(args.policies or settings.policies.dir), args.uploads,
                           args.kills, args.workers, args.rate, args.seed)
    finally:
        if started and not args.keep_stack:
            stack.down(settings)
    print(f"uploads in       {report.uploads}")
    print(f"decisions out    {report.decisions}")
    print(f"dead letters     {report.dead_letters}")
    print(f"duplicates       {report.duplicates}")
    print(f"replays suppressed by the decision ledger  {report.replays_suppressed}")
    print(f"lost             {len(report.lost)}" + (f"  ({', '.join(report.lost[:10])}...)"
                                                    if report.lost else ""))
    for line in report.lost_detail:
        print(f"  lost: {line}")
    print(report.summary())
    return 1 if report.lost else 0


def cmd_bench(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.devtools.bench import BenchConfig, format_report, run_bench, to_json

    cfg = BenchConfig(bundle=args.bundle, uploads=args.uploads, naive_uploads=args.naive_uploads,
                      raw_seconds=args.raw_seconds,
                      worker_counts=tuple(int(w) for w in args.workers.split(",")),
                      policies_dir=Path(args.policies or settings.policies.dir),
                      triton_instances=args.triton_instances,
                      torch_threads=args.torch_threads)
    say = (lambda line: print(line, file=sys.stderr)) if args.json else print
    report = run_bench(cfg, say)
    print(to_json(report) if args.json else "\n" + format_report(report))
    return 0


def cmd_dev(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.devtools import devstack, stack

    if args.gpu:
        import torch

        if not torch.cuda.is_available():
            print("dev up --gpu: no CUDA device here (torch.cuda.is_available() is False); "
                  "the CPU repository serves without --gpu", file=sys.stderr)
            return 2
        settings = settings.model_copy(update={"dev": settings.dev.model_copy(
            update={"model_repository": devstack.GPU_MODEL_REPOSITORY})})
    return stack.run(args.action, settings)


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dm = sub.add_parser("demo", help="stack up, apply policies, moderate the samples through "
                        "Kafka, print the decisions")
    dm.add_argument("--samples", default="samples", help="directory of sample images")
    dm.add_argument("--policies", help="policy directory (default: settings, 'policies')")
    dm.add_argument("--keep-stack", action="store_true",
                    help="leave the embedded stack running afterwards")
    dm.add_argument("--images", action="store_true",
                    help="run Triton and the worker inside the images make image builds "
                    "(Kafka and Redis on this host)")
    dm.add_argument("--timeout", type=float, default=300.0,
                    help="seconds to wait for every decision")
    dm.add_argument("--console", action="store_true",
                    help="then serve the policy console on the demo's uploads until Ctrl-C")
    dm.set_defaults(func=cmd_demo)

    c = sub.add_parser("chaos", help="kill -9 workers while uploads flow; count lost and "
                       "duplicate decisions")
    c.add_argument("--uploads", type=int, default=2000)
    c.add_argument("--kills", type=int, default=10)
    c.add_argument("--workers", type=int, default=2)
    c.add_argument("--rate", type=float, default=50.0, help="uploads per second produced")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--samples", default="samples")
    c.add_argument("--policies")
    c.add_argument("--keep-stack", action="store_true")
    c.set_defaults(func=cmd_chaos)

    bn = sub.add_parser("bench", help="pipeline vs raw encoder vs naive baseline, one run")
    bn.add_argument("--bundle", default="demo", help="demo, vit-b-32 or a bundle directory")
    bn.add_argument("--uploads", type=int, default=600, help="uploads per saturated run")
    bn.add_argument("--naive-uploads", type=int, default=150)
    bn.add_argument("--raw-seconds", type=float, default=6.0)
    bn.add_argument("--workers", default="1,2", help="worker counts to measure")
    bn.add_argument("--triton-instances", type=int, default=1,
                    help="python-backend instances per image model")
    bn.add_argument("--torch-threads", type=int, default=0,
                    help="intra-op threads per image-model instance (0 = config as is)")
    bn.add_argument("--policies")
    bn.add_argument("--json", action="store_true", help="print the results as JSON")
    bn.set_defaults(func=cmd_bench)

    d = sub.add_parser("dev", help="the embedded stack on 127.0.0.1")
    d.add_argument("action", choices=["up", "down", "status", "env"])
    d.add_argument("--gpu", action="store_true",
                   help="serve triton_models/gpu (GPU decoding, fp16, CUDA graphs); needs CUDA")
    d.set_defaults(func=cmd_dev)

