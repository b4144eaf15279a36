"""``moderation models``: train, evaluate, import and export model bundles."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from moderation.cli.common import encoder_for
from moderation.config import Settings


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.models.training.train import TrainConfig, train_bundle, train_ensemble

    keys = ("samples", "epochs", "seed", "members", "bf16", "prior_correction", "average_from",
            "twin_weight")
    given = {k: getattr(args, k) for k in keys}
    cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None})  # else the recipe's
    if args.seeds:
        report = train_ensemble(Path(args.out), cfg, args.seeds)
    else:
        report = train_bundle(Path(args.out), cfg)
    print(json.dumps(report, indent=2))
    return 0


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from moderation.edges.policy_files import load_policy_dir
    from moderation.models.training import benign_photos
    from moderation.models.training import evaluate as ev

    policy_dir = Path(args.policies or settings.policies.dir)
    policies = load_policy_dir(policy_dir)
    encoder = encoder_for(settings, not args.triton, args.bundle)
    sizes = {"per_policy": args.per_policy, "negatives": args.negatives,
             "lookalikes": args.lookalikes}
    report: dict[str, object] = {}
    if args.calibrate:
        thresholds = ev.calibrate(encoder, policies, ev.build_scenes("val", **sizes))
        report["calibrated_thresholds"] = thresholds
        if not args.json:
            print("thresholds maximising F1 on the val split:", json.dumps(thresholds))
        if args.write_thresholds:
            from moderation.edges.policy_files import write_thresholds

            write_thresholds(policy_dir, thresholds)
            policies = load_policy_dir(policy_dir)
        else:  # what-if: the splits below are scored with the fitted thresholds, files kept
            policies = ev.with_thresholds(policies, thresholds)
    splits = list(ev.TEST_SPLITS) if args.split == "all" else [args.split]
    for split in (s for s in splits if s != "photos"):
        rows = ev.evaluate(encoder, policies, ev.build_scenes(split, **sizes))
        report[split] = {"macro_f1": round(ev.macro_f1(rows), 4),
                         "policies": [r.__dict__ for r in rows]}
        if not args.json:
            print(ev.format_table(f"{ev.TITLES[split]} ({split})", rows))
            print()
    if args.split in ("all", "photos"):
        photos = benign_photos.check(encoder, policies)
        report["photos"] = benign_photos.summary(photos)
        if not args.json:
            print(benign_photos.format_report(photos))
    folders: dict[str, object] = {}
    if args.benign_dir:
        report["benign_dirs"] = folders
    for folder in args.benign_dir or []:
        found = benign_photos.check(encoder, policies, benign_photos.folder_paths(Path(folder)))
        folders[folder] = benign_photos.summary(found, every_image=False)
        if not args.json:
            print()
            print(benign_photos.format_report(found, f"benign images under {folder}",
                                              every_image=False))
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


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = sub.add_parser("models", help="train, evaluate, import and export model bundles")
    msub = models.add_subparsers(dest="models_command", required=True)

    t = msub.add_parser("train", help="train the embedded demo model (about 55 min, 2 cores)")
    t.add_argument("--out", default="moderation/bundles/emoji-minilm")
    t.add_argument("--samples", type=int, help="default: the recipe's (TrainConfig)")
    t.add_argument("--epochs", type=int)
    t.add_argument("--seed", type=int)
    t.add_argument("--seeds", type=lambda v: [int(s) for s in v.split(",")], metavar="S,S...",
                   help="train the recipe once per seed and serve every run's towers as one "
                        "bundle (0,1: four towers, about two hours on 2 cores; README)")
    t.add_argument("--members", type=int,
                   help="image towers trained side by side and served as their mean embedding")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction,
                   help="bfloat16 autocast (the recipe's): fast on CPUs with AMX or "
                        "AVX512-BF16, emulated and slower elsewhere; --no-bf16 trains in "
                        "float32, with different weights")
    t.add_argument("--prior-correction", type=float, metavar="TAU",
                   help="logit adjustment: TAU * log(sampling prior) added to the training "
                        "logits (the recipe's: 1; 0 = off)")
    t.add_argument("--average-from", type=float, metavar="FRACTION",
                   help="serve the mean of the weights after every step from this fraction "
                        "of the steps on, batch-norm statistics recomputed (0 = the last "
                        "weights)")
    t.add_argument("--twin-weight", type=float, metavar="W",
                   help="train on twin pairs, the same emoji drawn twice, and pull each "
                        "twin's embedding onto the other's with weight W (0 = off, the "
                        "recipe's)")
    t.set_defaults(func=cmd_train)

    e = msub.add_parser("eval", help="per-policy precision/recall/F1 on rendered emoji scenes")
    e.add_argument("--bundle")
    e.add_argument("--policies")
    e.add_argument("--split", default="all",
                   choices=["noto", "twemoji", "openmoji", "fluent", "gemojione", "val",
                            "photos", "all"],
                   help="all: every test split (not val) and the benign-photo check")
    e.add_argument("--triton", action="store_true", help="embed through Triton, not in-process")
    e.add_argument("--calibrate", action="store_true",
                   help="first fit thresholds on the val split, print them and score "
                        "the splits with them")
    e.add_argument("--write-thresholds", action="store_true",
                   help="with --calibrate: write them into the policy files")
    e.add_argument("--per-policy", type=int, default=60)
    e.add_argument("--negatives", type=int, default=300)
    e.add_argument("--lookalikes", type=int, default=150)
    e.add_argument("--benign-dir", action="append", metavar="DIR",
                   help="also score every PNG/JPEG under DIR, a folder of images known to be "
                        "benign, and report the share flagged (repeatable)")
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
