"""The measurements ``moderation bench`` makes (bench.py runs them in one go and reports):
the bare encoder, the pipeline through Kafka, the naive one-at-a-time baseline, and
scoring at scale. Each takes a started stack and returns plain numbers."""

from __future__ import annotations

import os
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

from moderation.config import Settings
from moderation.devtools import devstack, proc_stats, processes
from moderation.edges.encoders import TritonEncoder
from moderation.edges.kafka_io import ensure_topics, poll_keyed, read_from_start, scoped_topics
from moderation.edges.policy_store import RedisPolicyStore
from moderation.tools.produce import produce_events

Say = Callable[[str], None]


@dataclass
class Stack:
    state: Path
    procs: dict[str, processes.ManagedProcess] = field(default_factory=dict)
    settings: Settings = field(default_factory=Settings)

    def stop(self) -> None:
        for proc in reversed(list(self.procs.values())):
            proc.stop()


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
                     say: Say, worker_env: dict[str, str] | None = None, label: str = "",
                     raw: bool = False) -> dict[str, Any]:
    """``workers`` worker processes at saturation, then at half that rate. ``raw``: the
    image bytes as the record value (else JSON events with base64)."""
    run = uuid.uuid4().hex[:6]
    k = scoped_topics(stack.settings.kafka, f"bench-{run}")
    settings = stack.settings.model_copy(update={"kafka": k})
    ensure_topics(k, [k.input_topic, k.decision_topic, k.dead_letter_topic])
    env = {**devstack.worker_env(settings), **(worker_env or {})}
    procs = [devstack.start_worker(stack.state, env, name=f"bench-worker-{i}")
             for i in range(workers)]
    try:
        for proc, port in procs:
            devstack.wait_for_partitions(proc, port, 60)
        clock = DecisionClock(settings)
        # warm-up: the first batches pay one-off costs (connections, allocator)
        warm_ids = [f"warm-{run}-{i}" for i in range(16)]
        produce_events(settings.kafka, images, warm_ids, raw=raw)
        clock.wait_for(set(warm_ids), 120)
        cpu0 = _cpu(stack, procs)
        ids = [f"sat-{run}-{i}" for i in range(uploads)]
        t0 = time.time()
        created = produce_events(settings.kafka, images, ids, raw=raw)
        clock.wait_for(set(ids), 900)
        elapsed = max(clock.arrived[i] for i in ids) - t0
        rate = uploads / elapsed
        cpu = {name: v - cpu0.get(name, 0.0) for name, v in _cpu(stack, procs).items()}
        sat = _percentiles([clock.arrived[i] - created[i] for i in ids])
        say(f"  {workers} worker(s){label}: {rate:.1f} images/s at saturation, "
            f"p50 {sat['p50_ms']} ms")
        half_ids = [f"half-{run}-{i}" for i in range(max(8, uploads // 2))]
        created_half = produce_events(settings.kafka, images, half_ids, rate / 2, raw)
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


def _cpu(stack: Stack, workers: Sequence[tuple[processes.ManagedProcess, int]] = ()
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

    return {"score_s": median_seconds(lambda: score(emb, matrix), repeats),
            "decide_s": median_seconds(lambda: [d.to_bytes() for d in decide(
                ups, emb, matrix, 1, "m")], repeats)}


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
    """The median wall time of ``repeats`` calls."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))
