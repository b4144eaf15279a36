"""The ``moderation`` command."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from moderation.config import Settings
from moderation.contract.errors import ConfigError, ModerationError
from moderation.edges.encoders import Encoder

log = logging.getLogger(__name__)


def _encoder(settings: Settings, local: bool, bundle: str | None) -> Encoder:
    if local:
        from moderation.models.bundle import load_bundle
        from moderation.models.local_encoder import LocalEncoder

        return LocalEncoder(load_bundle(bundle or settings.model.bundle), settings.images.limits())
    from moderation.edges.encoders import TritonEncoder

    return TritonEncoder.from_settings(settings.triton)


def cmd_moderate(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.edges.policy_files import load_policy_dir
    from moderation.tools.moderate import format_results, moderate_files

    policies = load_policy_dir(Path(args.policies or settings.policies.dir))
    encoder = _encoder(settings, args.local, args.bundle)
    results = moderate_files([Path(f) for f in args.files], encoder,
                             policies, settings.images.limits())
    if args.json:
        print(json.dumps([r.to_json() for r in results], indent=2))
    else:
        print(format_results(results))
    return 1 if any(r.error for r in results) else 0


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.models.training.train import TrainConfig, train_bundle

    cfg = TrainConfig(samples=args.samples, epochs=args.epochs, seed=args.seed)
    report = train_bundle(Path(args.out), cfg)
    print(json.dumps(report, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.edges.policy_files import load_policy_dir
    from moderation.models.training import evaluate as ev

    policies = load_policy_dir(Path(args.policies or settings.policies.dir))
    encoder = _encoder(settings, not args.triton, args.bundle)
    sizes = {"per_policy": args.per_policy, "negatives": args.negatives,
             "lookalikes": args.lookalikes}
    report: dict[str, object] = {}
    if args.calibrate:
        thresholds = ev.calibrate(encoder, policies,
                                  ev.build_scenes("noto-val", **sizes))
        report["calibrated_thresholds"] = thresholds
        print("thresholds maximising F1 on noto-val:", json.dumps(thresholds))
        if args.write_thresholds:
            from moderation.edges.policy_files import write_thresholds

            write_thresholds(Path(args.policies or settings.policies.dir), thresholds)
            policies = load_policy_dir(Path(args.policies or settings.policies.dir))
    titles = {"noto": "(a) held-out Noto renderings, unseen compositions",
              "gemojione": "(b) EmojiOne art style, never used in training"}
    splits = ["noto", "gemojione"] if args.split == "all" else [args.split]
    for split in splits:
        rows = ev.evaluate(encoder, policies, ev.build_scenes(split, **sizes))
        report[split] = {"macro_f1": round(ev.macro_f1(rows), 4),
                         "policies": [r.__dict__ for r in rows]}
        if not args.json:
            print(ev.format_table(f"{titles[split]} ({split})", rows))
            print()
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


def cmd_import_hf(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.models.hf import import_hf

    m = import_hf(Path(args.src), Path(args.out), args.name)
    print(f"wrote bundle {m.name}@{m.version} (dim {m.embedding_dim}) to {args.out}")
    return 0


def cmd_init_random(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.models.hf import init_random

    m = init_random(Path(args.out), args.arch, args.seed)
    print(f"wrote random-weight bundle {m.name} (dim {m.embedding_dim}) to {args.out}")
    return 0


def cmd_export_onnx(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.models.bundle import load_bundle
    from moderation.models.export import export_onnx

    paths = export_onnx(load_bundle(args.bundle or settings.model.bundle), Path(args.out))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def cmd_build_trt(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.models.bundle import load_bundle
    from moderation.models.export import build_trt

    bundle = load_bundle(args.bundle or settings.model.bundle)
    for line in build_trt(bundle, Path(args.onnx_dir), Path(args.repository), args.max_batch,
                          args.dry_run, args.trtexec):
        print(line)
    return 0


def cmd_render_samples(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.devtools.samples import render_samples

    for path in render_samples(Path(args.out)):
        print(path)
    return 0


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
    encoder = _encoder(settings, args.local, None)
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


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.devtools.demo import run_demo

    samples = sorted(Path(args.samples).glob("*.*"))
    if not samples:
        raise ConfigError(f"no sample images in {args.samples}")
    return run_demo(settings, samples, Path(args.policies or settings.policies.dir),
                    keep_stack=args.keep_stack, timeout_s=args.timeout)


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
    from moderation.devtools import stack

    return stack.run(args.action, settings)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moderation", description=__doc__)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

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

    dm = sub.add_parser("demo", help="stack up, apply policies, moderate the samples through "
                        "Kafka, print the decisions")
    dm.add_argument("--samples", default="samples", help="directory of sample images")
    dm.add_argument("--policies", help="policy directory (default: settings, 'policies')")
    dm.add_argument("--keep-stack", action="store_true",
                    help="leave the embedded stack running afterwards")
    dm.add_argument("--timeout", type=float, default=300.0,
                    help="seconds to wait for every decision")
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
    d.set_defaults(func=cmd_dev)

    models = sub.add_parser("models", help="train, evaluate, import and export model bundles")
    msub = models.add_subparsers(dest="models_command", required=True)

    t = msub.add_parser("train", help="train the embedded demo model (about 35 min, 2 cores)")
    t.add_argument("--out", default="moderation/bundles/emoji-minilm")
    t.add_argument("--samples", type=int, default=160_000)
    t.add_argument("--epochs", type=int, default=2)
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    e = msub.add_parser("eval", help="per-policy precision/recall/F1 on rendered emoji scenes")
    e.add_argument("--bundle")
    e.add_argument("--policies")
    e.add_argument("--split", choices=["noto", "gemojione", "all"], default="all")
    e.add_argument("--triton", action="store_true", help="embed through Triton, not in-process")
    e.add_argument("--calibrate", action="store_true",
                   help="first fit thresholds on the noto-val split and print them")
    e.add_argument("--write-thresholds", action="store_true",
                   help="with --calibrate: write them into the policy files")
    e.add_argument("--per-policy", type=int, default=60)
    e.add_argument("--negatives", type=int, default=300)
    e.add_argument("--lookalikes", type=int, default=150)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=cmd_eval)

    h = msub.add_parser("import-hf", help="turn a local HF CLIP checkpoint into a bundle")
    h.add_argument("src")
    h.add_argument("--out", required=True)
    h.add_argument("--name")
    h.set_defaults(func=cmd_import_hf)

    r = msub.add_parser("init-random", help="a bundle with a real CLIP shape, random weights")
    r.add_argument("--arch", default="ViT-B-32")
    r.add_argument("--out", required=True)
    r.add_argument("--seed", type=int, default=0)
    r.set_defaults(func=cmd_init_random)

    o = msub.add_parser("export-onnx", help="write image and text encoder ONNX")
    o.add_argument("--bundle")
    o.add_argument("--out", required=True)
    o.set_defaults(func=cmd_export_onnx)

    b = msub.add_parser("build-trt", help="TensorRT plans + GPU Triton repository (GPU only)")
    b.add_argument("--bundle")
    b.add_argument("--onnx-dir", required=True)
    b.add_argument("--repository", required=True)
    b.add_argument("--max-batch", type=int, default=32)
    b.add_argument("--trtexec", default="trtexec")
    b.add_argument("--dry-run", action="store_true", help="write configs, print the commands")
    b.set_defaults(func=cmd_build_trt)

    s = msub.add_parser("render-samples", help="render the demo's sample images")
    s.add_argument("--out", default="samples")
    s.set_defaults(func=cmd_render_samples)
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
