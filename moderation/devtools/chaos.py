"""``moderation chaos``: kill -9 workers at random moments while uploads flow, then count.

Two (by default) ``moderation worker`` processes share a consumer group. A producer sends
the uploads at a steady rate; at random moments one worker is killed with SIGKILL and
started again. Afterwards every upload must have a decision or a dead letter; the report
counts what was lost (must be 0) and what was decided more than once.
"""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from moderation.config import Settings
from moderation.devtools import devstack, processes
from moderation.devtools.provision import provision
from moderation.edges.kafka_io import committed_offsets, poll_keyed, read_from_start, scoped_topics
from moderation.tools.produce import produce_events

log = logging.getLogger(__name__)


@dataclass
class ChaosReport:
    uploads: int
    kills: list[str] = field(default_factory=list)
    decisions: int = 0  # decision records, duplicates included
    dead_letters: int = 0
    lost: list[str] = field(default_factory=list)
    duplicates: int = 0  # outcome records beyond the first per upload
    replays_suppressed: int = 0  # redeliveries the decision ledger settled without publishing
    seconds: float = 0.0
    # where each lost upload sits, and how far its group committed there: the first clue
    lost_detail: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"chaos: {self.uploads} uploads in, {self.decisions} decisions out, "
                f"{len(self.lost)} lost, {self.duplicates} duplicates, "
                f"{self.dead_letters} dead letters, {len(self.kills)} kill -9s, "
                f"{self.replays_suppressed} replays suppressed, {self.seconds:.0f} s")


def _payloads(samples: list[Path]) -> list[bytes]:
    return [p.read_bytes() for p in samples]


def _produce(settings: Settings, ids: list[str], images: list[bytes], rate_per_s: float,
             errors: list[Exception]) -> None:
    try:
        produce_events(settings.kafka, images, ids, rate_per_s)
    except Exception as exc:  # reported by the caller: an upload never sent is not "lost"
        errors.append(exc)


class _Outcomes:
    """Follows the decision and dead-letter topics, counting records per upload id."""

    def __init__(self, settings: Settings, ids: set[str]) -> None:
        k = settings.kafka
        self.ids = ids
        self.decision_topic = k.decision_topic
        self.consumer = read_from_start(k, [k.decision_topic, k.dead_letter_topic])
        self.decisions: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()

    def poll(self, timeout_ms: int = 200) -> int:
        n = 0
        for uid, r in poll_keyed(self.consumer, timeout_ms):
            if uid in self.ids:
                (self.decisions if r.topic == self.decision_topic else self.dead)[uid] += 1
                n += 1
        return n

    def settled(self) -> int:
        return len(set(self.decisions) | set(self.dead))

    def drain(self, quiet_s: float = 3.0) -> None:
        """Read until nothing new arrives for ``quiet_s`` (late duplicates included)."""
        quiet_until = time.monotonic() + quiet_s
        while time.monotonic() < quiet_until:
            if self.poll(200):
                quiet_until = time.monotonic() + quiet_s


def run_chaos(settings: Settings, state_dir: Path, samples: list[Path], policies_dir: Path,
              uploads: int = 2000, kills: int = 10, workers: int = 2,
              rate_per_s: float = 50.0, seed: int = 0, stall_s: float = 120.0,
              say: Callable[[str], None] = print) -> ChaosReport:
    run = uuid.uuid4().hex[:8]
    k = scoped_topics(settings.kafka, f"chaos-{run}").model_copy(
        update={"session_timeout_ms": 6000})
    settings = settings.model_copy(update={"kafka": k})
    version = provision(settings, policies_dir)
    env = devstack.worker_env(settings)
    rng = random.Random(seed)
    ids = [f"chaos-{run}-{i:05d}" for i in range(uploads)]
    report = ChaosReport(uploads)
    say(f"chaos run {run}: {uploads} uploads at {rate_per_s:.0f}/s, {workers} workers, "
        f"{kills} kill -9s, policy version {version}")
    procs = [devstack.start_worker(state_dir, env, name=f"chaos-worker-{i}")[0]
             for i in range(workers)]
    outcomes = _Outcomes(settings, set(ids))
    errors: list[Exception] = []
    producer = threading.Thread(target=_produce, args=(settings, ids, _payloads(samples),
                                                       rate_per_s, errors), daemon=True)
    started = time.monotonic()
    producer.start()
    flow_s = uploads / rate_per_s
    kill_at = sorted(rng.uniform(0.1 * flow_s, 0.9 * flow_s) for _ in range(kills))
    try:
        for n, at in enumerate(kill_at, 1):
            while time.monotonic() - started < at:
                outcomes.poll(100)
            victim = rng.randrange(workers)
            pid = procs[victim].pid
            processes.kill_pid(pid, signal.SIGKILL)
            line = (f"kill -9 {n}/{kills}: chaos-worker-{victim} (pid {pid}) at "
                    f"{time.monotonic() - started:.1f} s, {outcomes.settled()} settled so far")
            report.kills.append(line)
            say(line)
            procs[victim] = devstack.start_worker(state_dir, env,
                                                  name=f"chaos-worker-{victim}")[0]
        producer.join()
        if errors:
            raise RuntimeError(f"producing failed: {errors[0]}")
        stalled_at = time.monotonic() + stall_s  # a lost upload never arrives: stop waiting
        while outcomes.settled() < uploads and time.monotonic() < stalled_at:
            if outcomes.poll(500):
                stalled_at = time.monotonic() + stall_s
    finally:
        for proc in procs:
            proc.stop()
    outcomes.drain()
    outcomes.consumer.close()
    report.seconds = time.monotonic() - started
    report.decisions = sum(outcomes.decisions.values())
    report.dead_letters = sum(outcomes.dead.values())
    report.lost = [i for i in ids if i not in outcomes.decisions and i not in outcomes.dead]
    report.duplicates = report.decisions + report.dead_letters - (uploads - len(report.lost))
    if report.lost:
        report.lost_detail = locate_lost(settings, set(report.lost))
    marker = f"already decided upload_id=chaos-{run}-"
    report.replays_suppressed = sum(
        log_file.read_text(errors="replace").count(marker)
        for log_file in state_dir.glob("chaos-worker-*.log"))
    return report


def locate_lost(settings: Settings, lost: set[str]) -> list[str]:
    """``upload_id partition=P offset=O committed=C`` for each lost upload."""
    k = settings.kafka
    reader = read_from_start(k, [k.input_topic])
    found: dict[str, tuple[int, int]] = {}
    quiet_until = time.monotonic() + 3.0
    while len(found) < len(lost) and time.monotonic() < quiet_until:
        polled = poll_keyed(reader, 200)
        if polled:
            quiet_until = time.monotonic() + 3.0
        found.update((uid, (r.partition, r.offset)) for uid, r in polled if uid in lost)
    reader.close()
    committed = committed_offsets(k, {p for p, _ in found.values()})
    return [f"{uid} partition={found[uid][0]} offset={found[uid][1]} "
            f"committed={committed.get(found[uid][0])}" if uid in found
            else f"{uid} not found in {k.input_topic}" for uid in sorted(lost)]
