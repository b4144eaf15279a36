"""``moderation bench``: the pipeline against the encoder's own limit and a naive baseline,
measured in one run, on one machine, on a freshly started embedded stack.

- raw: Triton's bare image tower (``clip_image_pixels``) fed preprocessed pixels at batch
  1, 8 and 32, two requests in flight, no Kafka;
- pipeline: photo-like JPEG/PNG uploads produced to Kafka as fast as the broker takes them,
  decisions consumed, with 1 and 2 ``moderation worker`` processes; then again at half the
  saturated rate for latency without queueing;
- naive: one message at a time: poll 1, one synchronous Triton request, score, publish and
  wait for the ack, commit; no batching, no overlap;
- CPU seconds and peak RSS per process, and the cost of scoring 1,000 policies x 10
  prompts against a batch of 32;
- the worker's CPU per upload for ~50 KB JPEGs, raw-bytes and JSON events, with each Kafka
  client (``worker_cpu_ms_per_image``: raw bytes, the default client);
- the recent-uploads index's cost (one worker with it off and on, twice each, alternating;
  then with thumbnails), and
  the console's backtest (100,000 uploads x 50 policies x 10 prompts), search and window
  load.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from moderation.config import KafkaSettings, RedisSettings, Settings, TritonSettings
from moderation.core.images import decode_image, preprocess
from moderation.devtools import devstack, proc_stats
from moderation.devtools.bench_console import measure_backtest, measure_window_load
from moderation.devtools.bench_images import encoded_uploads, jpeg_uploads
from moderation.devtools.bench_measures import (
    Say,
    Stack,
    measure_naive,
    measure_pipeline,
    measure_raw,
    measure_scoring,
)
from moderation.edges.encoders import TritonEncoder
from moderation.edges.policy_files import load_policy_dir
from moderation.edges.policy_store import RedisPolicyStore, apply_policies
from moderation.models.bundle import read_manifest, resolve_bundle_dir


@dataclass(frozen=True)
class BenchConfig:
    bundle: str = "demo"
    uploads: int = 600  # per pipeline measurement at saturation
    naive_uploads: int = 150
    raw_seconds: float = 6.0
    distinct_images: int = 40
    worker_counts: tuple[int, ...] = (1, 2)
    policies_dir: Path = Path("policies")
    triton_instances: int = 1
    torch_threads: int = 0  # clip_image's intra-op threads; 0 = as its config says (auto)
    console_uploads: int = 100_000  # the recent window backtested, searched and loaded


def resolve_bench_bundle(name: str, cache: Path, say: Say) -> str:
    """``demo``, ``vit-b-32`` (random weights, real shape; written once to ``cache``) or a
    bundle directory."""
    if name.lower() in ("vit-b-32", "vit-b/32"):
        out = cache / "vit-b-32"
        if not (out / "manifest.json").exists():
            from moderation.models.hf import init_random

            say(f"writing a random-weight ViT-B/32 bundle to {out} (once)...")
            init_random(out, "ViT-B-32", 0)
        return str(out)
    return name


def tuned_repository(state: Path, instances: int, torch_threads: int) -> Path:
    """A copy of the CPU repository whose ``clip_image`` has ``instances`` instances with
    ``torch_threads`` intra-op threads each (the repository as is for 1 and 0)."""
    import shutil

    src = devstack.DEFAULT_MODEL_REPOSITORY
    if instances == 1 and torch_threads == 0:
        return src
    dst = state / "repository"
    shutil.copytree(src, dst, dirs_exist_ok=True)
    # only the pipeline's model: clip_image_pixels keeps every core, as the encoder's limit
    cfg = dst / "clip_image" / "config.pbtxt"
    text = cfg.read_text().replace("count: 1", f"count: {instances}")
    if torch_threads:
        text = re.sub(r'(key: "torch_threads" value: \{ string_value: )"[^"]*"',
                      rf'\1"{torch_threads}"', text)
    cfg.write_text(text)
    return dst


def start_stack(cfg: BenchConfig, state: Path, bundle: str) -> Stack:
    stack = Stack(state)
    tansu, kafka_port = devstack.start_tansu(state)
    stack.procs["tansu"] = tansu
    redis, redis_port = devstack.start_redis(state)
    stack.procs["redis"] = redis
    repository = tuned_repository(state, cfg.triton_instances, cfg.torch_threads)
    triton, ports = devstack.start_triton(state, repository,
                                          env={"MODERATION_MODEL__BUNDLE": bundle},
                                          timeout_s=600)
    stack.procs["triton"] = triton
    stack.settings = Settings(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{kafka_port}",
                            session_timeout_ms=6000),
        redis=RedisSettings(url=f"redis://127.0.0.1:{redis_port}/0"),
        triton=TritonSettings(url=f"127.0.0.1:{ports.grpc}", timeout_s=120))
    return stack


# --- the whole run -----------------------------------------------------------------------


def run_bench(cfg: BenchConfig, say: Say = print, state: Path | None = None) -> dict[str, Any]:
    state = state or Path(tempfile.mkdtemp(prefix="moderation-bench-"))
    bundle = resolve_bench_bundle(cfg.bundle, Settings().dev.state_dir / "bench-bundles", say)
    manifest = read_manifest(resolve_bundle_dir(bundle))
    say(f"bench: bundle {manifest.name} (dim {manifest.embedding_dim}, "
        f"{manifest.image.preprocess.size} px), state {state}")
    images = encoded_uploads(cfg.distinct_images)
    say(f"  {len(images)} distinct uploads, mean {np.mean([len(b) for b in images]) / 1024:.0f}"
        " KB (640x480, JPEG and PNG)")
    spec = manifest.image.preprocess.to_preprocess()
    pixels = np.stack([preprocess(decode_image(b), spec) for b in images[:32]])
    stack = start_stack(cfg, state, bundle)
    try:
        apply_policies(load_policy_dir(cfg.policies_dir),
                       TritonEncoder.from_settings(stack.settings.triton),
                       RedisPolicyStore.from_settings(stack.settings.redis))
        raw = {}
        for b in (1, 8, 32):
            raw[b] = round(measure_raw(stack.settings, pixels, b, cfg.raw_seconds), 2)
            say(f"  raw encoder, batch {b}: {raw[b]:.1f} images/s")
        pipelines = [measure_pipeline(stack, images, w, cfg.uploads, say)
                     for w in cfg.worker_counts]
        worker_cpu = measure_worker_cpu(stack, cfg, say)
        recent = measure_recent_cost(stack, images, cfg, say)
        window = measure_window_load(stack.settings, manifest.embedding_dim,
                                     cfg.console_uploads)
        say(f"  recent window of {window['uploads']} uploads: loaded in {window['load_s']} s, "
            f"{window['redis_mib']} MiB in Redis")
        text_ms = measure_text_embedding(stack.settings)
        naive = measure_naive(stack, images, cfg.naive_uploads)
        say(f"  naive: {naive['images_per_s']:.1f} images/s")
        peak = {name: round(max(proc_stats.peak_rss_mib(p)
                                for p in proc_stats.family(proc.pid)), 1)
                for name, proc in stack.procs.items()}
    finally:
        stack.stop()
    scoring = measure_scoring(manifest.embedding_dim)
    console = measure_backtest(manifest.embedding_dim, cfg.console_uploads)
    say(f"  backtest {console['uploads']} uploads x {console['policies']} policies x "
        f"{console['prompts_per_policy']} prompts: {console['backtest_s']} s; search "
        f"{console['search_ms']} ms (+ {text_ms} ms to embed the text)")
    best_raw = max(raw.values())
    best = max(pipelines, key=lambda p: p["images_per_s"])
    batch32_s = 32 / raw[32]
    return {
        "bundle": manifest.name, "embedding_dim": manifest.embedding_dim,
        "image_size": manifest.image.preprocess.size,
        "raw_images_per_s": best_raw, "raw_by_batch": {str(b): v for b, v in raw.items()},
        "pipeline_images_per_s": best["images_per_s"], "pipeline_best_workers": best["workers"],
        "naive_images_per_s": naive["images_per_s"],
        "ratio_pipeline_to_raw": round(best["images_per_s"] / best_raw, 3),
        "ratio_pipeline_to_naive": round(best["images_per_s"] / naive["images_per_s"], 2),
        "latency_saturation_ms": best["saturation"], "latency_half_rate_ms": best["half_rate"],
        "worker_cpu_ms_per_image": worker_cpu["confluent-kafka"]["raw"],
        "worker_cpu": worker_cpu,
        "pipelines": pipelines, "naive": naive,
        "peak_rss_mib": {**peak, **{k: v for p in pipelines
                                    for k, v in p["peak_rss_mib"].items()}},
        "scoring_1000x10_batch32": {
            "score_ms": round(scoring["score_s"] * 1000, 2),
            "decide_ms": round(scoring["decide_s"] * 1000, 2),
            "batch32_inference_ms": round(batch32_s * 1000, 1),
            "score_fraction_of_inference": round(scoring["score_s"] / batch32_s, 4),
            "decide_fraction_of_inference": round(scoring["decide_s"] / batch32_s, 4)},
        "recent_index": recent,
        "console": {**console, "search_text_embed_ms": text_ms, "window": window},
        "machine": machine(), "config": {"uploads": cfg.uploads,
                                         "naive_uploads": cfg.naive_uploads,
                                         "triton_instances": cfg.triton_instances,
                                         "torch_threads": cfg.torch_threads},
    }


def measure_worker_cpu(stack: Stack, cfg: BenchConfig, say: Say) -> dict[str, Any]:
    """One worker's CPU milliseconds per upload for ~50 KB JPEGs, as raw-bytes records and
    as JSON events with base64: with each Kafka client, and as before the profile
    (kafka-python, BLAS with a thread per core: README, Performance)."""
    jpegs = jpeg_uploads(cfg.distinct_images)
    out: dict[str, Any] = {"jpeg_kb_mean": round(float(np.mean([len(j) for j in jpegs]))
                                                 / 1024, 1)}
    setups = {"confluent-kafka": {"MODERATION_KAFKA__CLIENT": "confluent-kafka"},
              "kafka-python": {"MODERATION_KAFKA__CLIENT": "kafka-python"},
              "before": {"MODERATION_KAFKA__CLIENT": "kafka-python",
                         "MODERATION_WORKER__BLAS_THREADS": str(os.cpu_count() or 1)}}
    for name, env in setups.items():
        out[name] = {}
        for form in ("raw", "json"):
            run = measure_pipeline(stack, jpegs, 1, cfg.uploads, say, env,
                                   f" ({name}, {form} 50 KB JPEGs)", raw=form == "raw")
            out[name][form] = round(run["cpu_seconds_per_image"]["worker-0"] * 1000, 3)
            out[name][f"{form}_images_per_s"] = run["images_per_s"]
    return out


def measure_recent_cost(stack: Stack, images: list[bytes], cfg: BenchConfig,
                        say: Say) -> dict[str, Any]:
    """One worker with the recent index off and on (the default: no thumbnails), in
    alternating pairs so that drift on a busy machine falls on both, then with thumbnails."""
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": [], "thumbnails": []}
    envs = {"off": {"MODERATION_RECENT__ENABLED": "false"}, "on": {},
            "thumbnails": {"MODERATION_RECENT__THUMBNAILS": "true"}}
    for label in ("off", "on", "off", "on", "thumbnails"):
        runs[label].append(measure_pipeline(stack, images, 1, cfg.uploads, say, envs[label],
                                            f" (recent index {label})"))

    def mean(label: str, key: str) -> float:
        if key == "cpu":
            return float(np.mean([r["cpu_seconds_per_image"]["worker-0"] * 1000
                                  for r in runs[label]]))
        return float(np.mean([r["images_per_s"] for r in runs[label]]))

    base = mean("off", "ips")
    return {"off_images_per_s": round(base, 1), "on_images_per_s": round(mean("on", "ips"), 1),
            "thumbnails_images_per_s": round(mean("thumbnails", "ips"), 1),
            "runs_images_per_s": {k: [r["images_per_s"] for r in v] for k, v in runs.items()},
            "throughput_cost": round(1 - mean("on", "ips") / base, 3),
            "throughput_cost_thumbnails": round(1 - mean("thumbnails", "ips") / base, 3),
            "worker_cpu_ms_per_image": {k: round(mean(k, "cpu"), 2) for k in runs}}


def measure_text_embedding(settings: Settings, repeats: int = 5) -> float:
    """Milliseconds to embed one new text through Triton (warm, uncached): a search's
    first step."""
    encoder = TritonEncoder.from_settings(settings.triton)
    encoder.embed_texts(["warm up"])
    times = []
    for i in range(repeats):
        t = time.perf_counter()
        encoder.embed_texts([f"a syringe on a table, take {i}"])
        times.append(time.perf_counter() - t)
    encoder.close()
    return round(float(np.median(times)) * 1000, 1)


def machine() -> str:
    import platform

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPUs ({cpu}), {platform.system()} {platform.release()}"


def format_report(r: dict[str, Any]) -> str:
    lines = [f"bench: {r['bundle']} ({r['image_size']} px, dim {r['embedding_dim']}) on "
             f"{r['machine']}", "",
             f"ratio pipeline / raw encoder   {r['ratio_pipeline_to_raw']:.3f}",
             f"ratio pipeline / naive         {r['ratio_pipeline_to_naive']:.2f}", "",
             "| measurement | images/s | p50 ms | p95 ms | p99 ms |", "|---|---:|---:|---:|---:|"]
    for b, v in r["raw_by_batch"].items():
        lines.append(f"| raw encoder, batch {b} (pixels in, no Kafka) | {v:.1f} | | | |")
    for p in r["pipelines"]:
        s, h = p["saturation"], p["half_rate"]
        lines.append(f"| pipeline, {p['workers']} worker(s), saturated | {p['images_per_s']:.1f}"
                     f" | {s['p50_ms']} | {s['p95_ms']} | {s['p99_ms']} |")
        lines.append(f"| pipeline, {p['workers']} worker(s), 50% rate | {h['images_per_s']:.1f}"
                     f" | {h['p50_ms']} | {h['p95_ms']} | {h['p99_ms']} |")
    lines.append(f"| naive (1 message, 1 request, sync) | {r['naive_images_per_s']:.1f} | | | |")
    lines += ["", "CPU seconds per image (best pipeline; naive):"]
    best = next(p for p in r["pipelines"] if p["workers"] == r["pipeline_best_workers"])
    for name, v in best["cpu_seconds_per_image"].items():
        naive = r["naive"]["cpu_seconds_per_image"].get(name)
        lines.append(f"  {name:<10} {v * 1000:8.2f} ms" + (f"   naive {naive * 1000:8.2f} ms"
                                                           if naive is not None else ""))
    wc = r["worker_cpu"]
    lines += ["", f"worker CPU ms per upload, {wc['jpeg_kb_mean']} KB JPEGs: "
              + "; ".join(f"{client}: raw {wc[client]['raw']}, JSON {wc[client]['json']}"
                          for client in ("confluent-kafka", "kafka-python", "before"))]
    lines += ["", "peak RSS MiB: " + ", ".join(f"{k} {v:.0f}"
                                                for k, v in r["peak_rss_mib"].items())]
    s = r["scoring_1000x10_batch32"]
    rc, c = r["recent_index"], r["console"]
    lines += ["", f"recent-uploads index, 1 worker (mean of 2 runs each): off "
              f"{rc['off_images_per_s']:.1f}, on "
              f"{rc['on_images_per_s']:.1f} ({rc['throughput_cost']:+.1%} cost), with "
              f"thumbnails {rc['thumbnails_images_per_s']:.1f} images/s "
              f"({rc['throughput_cost_thumbnails']:+.1%}); worker CPU ms/image "
              + ", ".join(f"{k} {v}" for k, v in rc["worker_cpu_ms_per_image"].items()),
              f"console: backtest {c['uploads']} uploads x {c['policies']} policies x "
              f"{c['prompts_per_policy']} prompts {c['backtest_s']} s; search "
              f"{c['search_ms']} ms + {c['search_text_embed_ms']} ms text embedding; window "
              f"load {c['window']['load_s']} s ({c['window']['redis_mib']} MiB in Redis)"]
    lines += ["", f"scoring 1,000 policies x 10 prompts, batch 32: score {s['score_ms']} ms, "
              f"with decisions as JSON {s['decide_ms']} ms; batch-32 inference "
              f"{s['batch32_inference_ms']} ms; fraction {s['score_fraction_of_inference']:.2%}"
              f" (score), {s['decide_fraction_of_inference']:.2%} (with decisions)"]
    return "\n".join(lines)


def to_json(r: dict[str, Any]) -> str:
    return json.dumps(r, indent=2)
