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
  prompts against a batch of 32.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from moderation.config import KafkaSettings, RedisSettings, Settings, TritonSettings
from moderation.core.images import decode_image, preprocess
from moderation.devtools import devstack, proc_stats
from moderation.devtools.bench_images import encoded_uploads
from moderation.edges.encoders import TritonEncoder
from moderation.edges.kafka_io import ensure_topics, poll_keyed, read_from_start, scoped_topics
from moderation.edges.policy_files import load_policy_dir
from moderation.edges.policy_store import RedisPolicyStore, apply_policies
from moderation.models.bundle import read_manifest, resolve_bundle_dir
from moderation.tools.produce import produce_events

log = logging.getLogger(__name__)

Say = Callable[[str], None]


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


@dataclass
class Stack:
    state: Path
    procs: dict[str, devstack.ManagedProcess] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()


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


# --- the encoder's own limit -------------------------------------------------------------


def measure_raw(settings: Settings, pixels: NDArray[Any], batch: int, seconds: float,
                in_flight: int = 2) -> float:
    """Images/s through clip_image_pixels at one batch size, ``in_flight`` requests at once."""
    import tritonclient.grpc as grpcclient

    reps = -(-batch // len(pixels))
    data = np.ascontiguousarray(np.concatenate([pixels] * reps)[:batch], np.float32)
    done = [0] * in_flight
    stop_at = [0.0]

    def loop(slot: int) -> None:
        client = grpcclient.InferenceServerClient(settings.triton.url)
        inp = grpcclient.InferInput("PIXELS", list(data.shape), "FP32")
        inp.set_data_from_numpy(data)
        out = [grpcclient.InferRequestedOutput("EMBEDDING")]
        while time.perf_counter() < stop_at[0]:
            client.infer("clip_image_pixels", [inp], outputs=out)
            done[slot] += batch
        client.close()

    warm = grpcclient.InferenceServerClient(settings.triton.url)
    warm_in = grpcclient.InferInput("PIXELS", list(data.shape), "FP32")
    warm_in.set_data_from_numpy(data)
    warm.infer("clip_image_pixels", [warm_in])  # first call pays one-off costs
    warm.close()
    start = time.perf_counter()
    stop_at[0] = start + seconds
    threads = [threading.Thread(target=loop, args=(i,)) for i in range(in_flight)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


# --- the pipeline ------------------------------------------------------------------------


class DecisionClock:
    """Follows the decision topic from its own thread (so producing never delays the
    reading) and records when each upload's first decision arrived."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = read_from_start(settings.kafka, [settings.kafka.decision_topic])
        self.arrived: dict[str, float] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        while not self._stop.is_set():
            polled = poll_keyed(self.consumer, 50)
            now = time.time()
            with self._changed:
                for uid, _ in polled:
                    self.arrived.setdefault(uid, now)
                self._changed.notify_all()

    def wait_for(self, ids: set[str], timeout_s: float) -> None:
        with self._changed:
            if not self._changed.wait_for(lambda: ids <= self.arrived.keys(), timeout_s):
                missing = len(ids - self.arrived.keys())
                raise TimeoutError(f"{missing} uploads without a decision after {timeout_s} s")

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.consumer.close()


def _percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values) * 1000
    return {f"p{q}_ms": round(float(np.percentile(arr, q)), 1) for q in (50, 95, 99)}


def measure_pipeline(stack: Stack, images: list[bytes], workers: int, uploads: int,
                     say: Say) -> dict[str, Any]:
    run = uuid.uuid4().hex[:6]
    k = scoped_topics(stack.settings.kafka, f"bench-{run}")
    settings = stack.settings.model_copy(update={"kafka": k})
    ensure_topics(k, [k.input_topic, k.decision_topic, k.dead_letter_topic])
    env = devstack.worker_env(settings)
    procs = [devstack.start_worker(stack.state, env, name=f"bench-worker-{i}")
             for i in range(workers)]
    try:
        for proc, port in procs:
            devstack.wait_for_partitions(proc, port, 60)
        clock = DecisionClock(settings)
        # warm-up: the first batches pay one-off costs (connections, allocator)
        warm_ids = [f"warm-{run}-{i}" for i in range(16)]
        produce_events(settings.kafka, images, warm_ids)
        clock.wait_for(set(warm_ids), 120)
        cpu0 = _cpu(stack, procs)
        ids = [f"sat-{run}-{i}" for i in range(uploads)]
        t0 = time.time()
        created = produce_events(settings.kafka, images, ids)
        clock.wait_for(set(ids), 900)
        elapsed = max(clock.arrived[i] for i in ids) - t0
        rate = uploads / elapsed
        cpu = {name: v - cpu0.get(name, 0.0) for name, v in _cpu(stack, procs).items()}
        sat = _percentiles([clock.arrived[i] - created[i] for i in ids])
        say(f"  {workers} worker(s): {rate:.1f} images/s at saturation, p50 {sat['p50_ms']} ms")
        half_ids = [f"half-{run}-{i}" for i in range(max(8, uploads // 2))]
        created_half = produce_events(settings.kafka, images, half_ids, rate / 2)
        clock.wait_for(set(half_ids), 900)
        half = _percentiles([clock.arrived[i] - created_half[i] for i in half_ids])
        say(f"  {workers} worker(s) at {rate / 2:.1f}/s (50%): p50 {half['p50_ms']} ms, "
            f"p99 {half['p99_ms']} ms")
        clock.close()
        rss = {f"worker-{i}": round(proc_stats.peak_rss_mib(p.pid), 1)
               for i, (p, _) in enumerate(procs)}
    finally:
        for proc, _ in procs:
            proc.stop()
    return {"workers": workers, "images_per_s": round(rate, 2), "saturation": sat,
            "half_rate": {"images_per_s": round(rate / 2, 2), **half},
            "cpu_seconds": {n: round(v, 2) for n, v in cpu.items()},
            "cpu_seconds_per_image": {n: round(v / uploads, 5) for n, v in cpu.items()},
            "peak_rss_mib": rss}


def _cpu(stack: Stack, workers: Sequence[tuple[devstack.ManagedProcess, int]] = ()
         ) -> dict[str, float]:
    out = {"triton": sum(proc_stats.cpu_seconds(p)
                         for p in proc_stats.family(stack.procs["triton"].pid)),
           "broker": proc_stats.cpu_seconds(stack.procs["tansu"].pid),
           "redis": proc_stats.cpu_seconds(stack.procs["redis"].pid),
           "bench": proc_stats.cpu_seconds(os.getpid())}
    for i, (proc, _) in enumerate(workers):
        out[f"worker-{i}"] = proc_stats.cpu_seconds(proc.pid)
    return out


# --- the naive baseline ------------------------------------------------------------------


def measure_naive(stack: Stack, images: list[bytes], uploads: int) -> dict[str, Any]:
    """One upload at a time, synchronously, in this process."""
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

    from moderation.contract.events import parse_upload
    from moderation.core.batching import decide, started_at

    run = uuid.uuid4().hex[:6]
    k = scoped_topics(stack.settings.kafka, f"naive-{run}")
    settings = stack.settings.model_copy(update={"kafka": k})
    ensure_topics(k, [k.input_topic, k.decision_topic])
    ids = [f"naive-{run}-{i}" for i in range(uploads)]
    produce_events(settings.kafka, images, ids)
    stored = RedisPolicyStore.from_settings(settings.redis).load()
    matrix = stored.matrix()
    encoder = TritonEncoder.from_settings(settings.triton)
    consumer = KafkaConsumer(k.input_topic, **k.client_options(), group_id=k.group_id,
                             enable_auto_commit=False, auto_offset_reset="earliest",
                             session_timeout_ms=6000, max_partition_fetch_bytes=16_000_000)
    producer = KafkaProducer(**k.client_options(), acks="all", max_request_size=8_000_000)
    done = 0
    cpu0 = _cpu(stack)
    start = None
    while done < uploads:
        for tp, records in consumer.poll(timeout_ms=200, max_records=1).items():
            for r in records:
                start = start or time.perf_counter()
                upload = parse_upload(r.value, r.headers)
                emb = encoder.embed_images([upload.image or b""])
                [decision] = decide([(upload, started_at(upload, r.timestamp))], emb, matrix,
                                    stored.version, stored.model)
                producer.send(k.decision_topic, key=r.key, value=decision.to_bytes()).get(30)
                consumer.commit({TopicPartition(tp.topic, tp.partition):
                                 OffsetAndMetadata(r.offset + 1, "", -1)})
                done += 1
    elapsed = time.perf_counter() - (start or time.perf_counter())
    cpu = {n: v - cpu0.get(n, 0.0) for n, v in _cpu(stack).items()}
    consumer.close()
    producer.close()
    encoder.close()
    return {"images_per_s": round(uploads / elapsed, 2),
            "cpu_seconds_per_image": {n: round(v / uploads, 5) for n, v in cpu.items()}}


# --- scoring at scale --------------------------------------------------------------------


def measure_scoring(dim: int, policies: int = 1000, prompts: int = 10, batch: int = 32,
                    repeats: int = 30) -> dict[str, float]:
    from moderation.contract.events import Upload
    from moderation.core.batching import decide
    from moderation.core.policy import Policy, PolicySet
    from moderation.core.scoring import compile_policies, score

    rng = np.random.default_rng(0)
    texts = [f"p{k}-{j}" for k in range(policies) for j in range(prompts)]
    vecs = rng.normal(size=(len(texts), dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    pset = PolicySet(policies=tuple(
        Policy(name=f"p{k}", threshold=0.3, prompts=tuple(texts[k * prompts:(k + 1) * prompts]))
        for k in range(policies)))
    matrix = compile_policies(pset, dict(zip(texts, vecs, strict=True)))
    emb = rng.normal(size=(batch, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ups = [(Upload(upload_id=f"u{i}", image=b"", image_url=None, created_at=None),
            datetime.now(UTC)) for i in range(batch)]

    def best_of(fn: Callable[[], object]) -> float:  # the median, in fact
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return float(np.median(times))

    return {"score_s": best_of(lambda: score(emb, matrix)),
            "decide_s": best_of(lambda: [d.to_bytes() for d in decide(ups, emb, matrix, 1,
                                                                        "m")])}


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
        naive = measure_naive(stack, images, cfg.naive_uploads)
        say(f"  naive: {naive['images_per_s']:.1f} images/s")
        peak = {name: round(max(proc_stats.peak_rss_mib(p)
                                for p in proc_stats.family(proc.pid)), 1)
                for name, proc in stack.procs.items()}
    finally:
        stack.stop()
    scoring = measure_scoring(manifest.embedding_dim)
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
        "pipelines": pipelines, "naive": naive,
        "peak_rss_mib": {**peak, **{k: v for p in pipelines
                                    for k, v in p["peak_rss_mib"].items()}},
        "scoring_1000x10_batch32": {
            "score_ms": round(scoring["score_s"] * 1000, 2),
            "decide_ms": round(scoring["decide_s"] * 1000, 2),
            "batch32_inference_ms": round(batch32_s * 1000, 1),
            "score_fraction_of_inference": round(scoring["score_s"] / batch32_s, 4),
            "decide_fraction_of_inference": round(scoring["decide_s"] / batch32_s, 4)},
        "machine": machine(), "config": {"uploads": cfg.uploads,
                                         "naive_uploads": cfg.naive_uploads,
                                         "triton_instances": cfg.triton_instances,
                                         "torch_threads": cfg.torch_threads},
    }


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
    lines += ["", "peak RSS MiB: " + ", ".join(f"{k} {v:.0f}"
                                                for k, v in r["peak_rss_mib"].items())]
    s = r["scoring_1000x10_batch32"]
    lines += ["", f"scoring 1,000 policies x 10 prompts, batch 32: score {s['score_ms']} ms, "
              f"with decisions as JSON {s['decide_ms']} ms; batch-32 inference "
              f"{s['batch32_inference_ms']} ms; fraction {s['score_fraction_of_inference']:.2%}"
              f" (score), {s['decide_fraction_of_inference']:.2%} (with decisions)"]
    return "\n".join(lines)


def to_json(r: dict[str, Any]) -> str:
    return json.dumps(r, indent=2)
