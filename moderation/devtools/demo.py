"""``moderation demo``: the whole service on the embedded stack, end to end.

Starts the stack (unless it runs), applies ``policies/``, starts a worker process,
produces the sample images as upload events, follows the decision and dead-letter topics
until every upload has its answer, and prints what was decided. With ``--images``,
Triton and the worker run inside the images ``make image`` builds (containers.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moderation.config import Settings
from moderation.devtools import containers, devstack, processes, stack
from moderation.devtools.processes import ManagedProcess
from moderation.devtools.provision import create_topics, provision
from moderation.devtools.samples import SAMPLES
from moderation.edges.kafka_io import poll_keyed, read_from_start
from moderation.edges.net import port_open
from moderation.models.training.eval_labels import policies_of
from moderation.tools.produce import produce_files

log = logging.getLogger(__name__)

EXPECTED = {stem: policies_of(list(chars)) for stem, chars in SAMPLES}
DEMO_WORKER = {"MODERATION_RECENT__THUMBNAILS": "true"}  # pictures in the demo's console


@dataclass(frozen=True)
class Outcome:
    upload_id: str
    name: str
    decision: dict[str, Any] | None = None
    dead_letter: str | None = None

    @property
    def status(self) -> str:
        if self.decision is not None:
            return str(self.decision["decision"])
        return "dead-letter" if self.dead_letter else "undecided"


def stack_settings(settings: Settings) -> tuple[Settings, dict[str, str], bool]:
    """Bring the embedded stack up; settings and env that point at it; whether we started it."""
    before = stack.read_state(settings)
    was_up = all(stack.healthy(n, before) for n in stack.SERVICES)
    if not was_up:
        print("starting the embedded stack (Tansu broker, redis-server, tritonserver)...",
              file=sys.stderr)
    state = stack.up(settings)
    env = stack.env(state)
    os.environ.update(env)
    return Settings(), env, not was_up


def follow_results(settings: Settings, ids: dict[str, str], timeout_s: float,
                   progress: bool = True) -> dict[str, Outcome]:
    """Read the decision and dead-letter topics until every id has an outcome or time is up."""
    k = settings.kafka
    consumer = read_from_start(k, [k.decision_topic, k.dead_letter_topic])
    outcomes: dict[str, Outcome] = {}
    bar = _progress(len(ids), progress)
    deadline = time.monotonic() + timeout_s
    try:
        while len(outcomes) < len(ids) and time.monotonic() < deadline:
            for uid, r in poll_keyed(consumer, 200):
                if uid not in ids or uid in outcomes:
                    continue
                if r.topic == k.decision_topic:
                    outcomes[uid] = Outcome(uid, ids[uid], decision=json.loads(r.value))
                else:
                    reason = dict(r.headers or []).get("error-type", b"?").decode()
                    outcomes[uid] = Outcome(uid, ids[uid], dead_letter=reason)
                bar.update(1)
    finally:
        bar.close()
        consumer.close()
    return outcomes


def _progress(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="decisions", unit="upload", file=sys.stderr,
                disable=not enabled, dynamic_ncols=True)


def format_table(outcomes: Sequence[Outcome]) -> str:
    rows = [("upload", "expected", "decision", "flagged", "top policy (score / threshold)")]
    for o in outcomes:
        expected = ",".join(sorted(EXPECTED.get(o.name, set()))) or "-"
        if o.decision is None:
            rows.append((o.name, expected, o.status, "-", o.dead_letter or "-"))
            continue
        top = max(o.decision["verdicts"], key=lambda v: v["score"] - v["threshold"])
        rows.append((o.name, expected, o.status, ",".join(o.decision["flagged_policies"]) or "-",
                     f"{top['policy']} ({top['score']:.3f} / {top['threshold']:.3f})"))
    widths = [max(len(r[c]) for r in rows) for c in range(4)]
    return "\n".join("  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4]
                     for r in rows)


def summary(outcomes: Sequence[Outcome]) -> str:
    decided = [(o, o.decision) for o in outcomes if o.decision is not None]
    flagged = sum(d["decision"] == "flag" for _, d in decided)
    dead = sum(o.dead_letter is not None for o in outcomes)
    undecided = sum(o.status == "undecided" for o in outcomes)
    known = [(EXPECTED[o.name], d) for o, d in decided if o.name in EXPECTED]
    exact = sum(set(d["flagged_policies"]) == want for want, d in known)
    right_call = sum((d["decision"] == "flag") == bool(want) for want, d in known)
    versions = sorted({str(d["policy_version"]) for _, d in decided})
    models = sorted({str(d["model"]) for _, d in decided})
    latencies = sorted(float(d["latency_ms"]) for _, d in decided)
    p50 = f"{latencies[len(latencies) // 2]:.0f} ms" if latencies else "-"
    return (f"{len(outcomes)} uploads: {flagged} flagged, {len(decided) - flagged} allowed, "
            f"{dead} dead-lettered, {undecided} undecided\n"
            f"flag/allow as expected: {right_call}/{len(known)}; exactly the expected "
            f"policies: {exact}/{len(known)}\n"
            f"policy version {','.join(versions) or '-'}, model {','.join(models) or '-'}, "
            f"median latency {p50} (event created to decision)")


@contextlib.contextmanager
def host_services(settings: Settings, policies_dir: Path, keep_stack: bool
                  ) -> Iterator[tuple[Settings, ManagedProcess]]:
    """The embedded stack (Kafka, Redis, Triton) and a worker, as processes on this host."""
    settings, env, started = stack_settings(settings)
    worker = None
    try:
        version = provision(settings, policies_dir)
        print(f"applied {policies_dir} as policy version {version}", file=sys.stderr)
        worker, port = devstack.start_worker(settings.dev.state_dir, {**env, **DEMO_WORKER},
                                             name="worker-demo")
        print(f"worker pid {worker.pid}: metrics http://127.0.0.1:{port}/metrics, "
              f"log {worker.log_path}", file=sys.stderr)
        devstack.wait_for_partitions(worker, port, 120.0)
        yield settings, worker
    finally:
        if worker is not None:
            worker.stop()
        if started and not keep_stack:
            stack.down(settings)


@contextlib.contextmanager
def image_services(settings: Settings, policies_dir: Path
                   ) -> Iterator[tuple[Settings, ManagedProcess]]:
    """Kafka and Redis on this host; Triton, ``policies apply`` and the worker inside the
    images that ``make image`` builds (host network)."""
    containers.require_images(containers.WORKER_IMAGE, containers.TRITON_CPU_IMAGE)
    state = settings.dev.state_dir / "images"
    procs: list[ManagedProcess] = []
    try:
        kafka, kafka_port = devstack.start_tansu(state)
        procs.append(kafka)
        redis, redis_port = devstack.start_redis(state)
        procs.append(redis)
        ports = devstack.TritonPorts.free()
        triton = containers.start_in_image(
            "triton-image", containers.TRITON_CPU_IMAGE,
            ["triton-cpu", "--model-repository=/models", f"--http-port={ports.http}",
             f"--grpc-port={ports.grpc}", f"--metrics-port={ports.metrics}"], state)
        procs.append(triton)
        print(f"triton in {containers.TRITON_CPU_IMAGE}: log {triton.log_path}", file=sys.stderr)
        processes.wait_until(lambda: processes.http_ok(
            f"http://127.0.0.1:{ports.http}/v2/health/ready"), triton, 300.0, "ready")
        env = {"MODERATION_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
               "MODERATION_REDIS__URL": f"redis://127.0.0.1:{redis_port}/0",
               "MODERATION_TRITON__URL": f"127.0.0.1:{ports.grpc}"}
        os.environ.update(env)
        settings = Settings()
        create_topics(settings)
        print(containers.run_in_image(
            containers.WORKER_IMAGE, ["moderation", "policies", "apply", "/policies"], env,
            [f"{policies_dir.resolve()}:/policies:ro"]).strip(), file=sys.stderr)
        port = processes.free_port()
        worker = containers.start_in_image(
            "worker-image", containers.WORKER_IMAGE, ["moderation", "worker"], state,
            {**env, **DEMO_WORKER, "MODERATION_WORKER__HTTP_PORT": str(port)})
        procs.append(worker)
        print(f"worker in {containers.WORKER_IMAGE}: metrics http://127.0.0.1:{port}/metrics, "
              f"log {worker.log_path}", file=sys.stderr)
        processes.wait_until(lambda: processes.http_ok(f"http://127.0.0.1:{port}/healthz"),
                             worker, 60.0, "serving /healthz")
        devstack.wait_for_partitions(worker, port, 120.0)
        yield settings, worker
    finally:
        for proc in reversed(procs):
            proc.stop()


@contextlib.contextmanager
def demo_session(settings: Settings, samples: Sequence[Path], policies_dir: Path,
                 keep_stack: bool = False, timeout_s: float = 300.0, images: bool = False
                 ) -> Iterator[tuple[Settings, list[Outcome]]]:
    """Every sample through Kafka and a worker; its outcome, in the order produced. The
    services stay up until the block ends."""
    services = (image_services(settings, policies_dir) if images
                else host_services(settings, policies_dir, keep_stack))
    with services as (settings, _worker):
        prefix = f"demo-{uuid.uuid4().hex[:8]}-"
        produced = produce_files(settings.kafka, samples, id_prefix=prefix)
        ids = {p.upload_id: p.path.stem for p in produced}
        outcomes = follow_results(settings, ids, timeout_s, progress=sys.stderr.isatty())
        yield settings, [outcomes.get(uid, Outcome(uid, name)) for uid, name in ids.items()]


def demo_outcomes(settings: Settings, samples: Sequence[Path], policies_dir: Path,
                  keep_stack: bool = False, timeout_s: float = 300.0, images: bool = False
                  ) -> list[Outcome]:
    with demo_session(settings, samples, policies_dir, keep_stack, timeout_s,
                      images) as (_, ordered):
        return ordered


def serve_console(settings: Settings) -> None:
    """The policy console on the demo's stack, with fresh tokens, until Ctrl-C."""
    tokens = {"demo-editor": ("editor", secrets.token_urlsafe(12)),
              "demo-viewer": ("viewer", secrets.token_urlsafe(12))}
    env = {"MODERATION_CONSOLE__TOKENS": json.dumps(
        [{"name": n, "role": r, "token": t} for n, (r, t) in tokens.items()])}
    port = settings.console.port if not port_open(settings.console.port) else None
    console, port = devstack.start_console(settings.dev.state_dir, env, port=port)
    print(f"\npolicy console: http://127.0.0.1:{port}/  (API docs: /docs; log "
          f"{console.log_path})\n  editor token: {tokens['demo-editor'][1]}\n"
          f"  viewer token: {tokens['demo-viewer'][1]}\n"
          "the demo's uploads are in its recent index: try a rule on them. Ctrl-C stops "
          "the console, the worker and the stack.", flush=True)
    try:
        while console.alive():
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut cleanup
        console.stop()


def run_demo(settings: Settings, samples: Sequence[Path], policies_dir: Path,
             keep_stack: bool = False, timeout_s: float = 300.0, images: bool = False,
             console: bool = False) -> int:
    with demo_session(settings, samples, policies_dir, keep_stack, timeout_s,
                      images) as (settings, ordered):
        print(format_table(ordered))
        print()
        print(summary(ordered))
        if console:
            serve_console(settings)
    missing = [o.name for o in ordered if o.status == "undecided"]
    if missing:
        where = "worker-image.log" if images else "worker-demo.log"
        print(f"error: no decision within {timeout_s:.0f} s for: {', '.join(missing)} "
              f"(worker log: {settings.dev.state_dir / ('images/' if images else '') / where})",
              file=sys.stderr)
        return 1
    return 0
