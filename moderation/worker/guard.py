"""The poison-record guard: records whose processing keeps dying are isolated, then
dead-lettered instead of stopping every worker that picks them up.

An attempt is counted in Redis (edges/attempt_counter.py) before work on a record starts
and forgotten once the record is settled. A record polled with attempts already counted
is processed alone, with nothing else in flight, so that a second death counts against it
and no bystander; at ``worker.max_attempts`` it is dead-lettered as ``poison_record``
without being parsed. While Redis is unreachable the guard is off and work goes on.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from moderation.edges.attempt_counter import AttemptCounter, Coordinates
from moderation.edges.kafka_io import Record
from moderation.edges.metrics import Metrics
from moderation.edges.policy_store import StoreError
from moderation.edges.side_store import Availability
from moderation.worker.jobs import TP, Job

log = logging.getLogger(__name__)


def poison_message(attempts: int, limit: int) -> str:
    return (f"work on this record started {attempts} times without finishing (limit {limit}): "
            "each time its worker died or Triton failed on it alone; not processed again")


@dataclass(eq=False)
class PoisonGuard:
    attempts: AttemptCounter | None  # None: no guard (unit tests)
    limit: int
    metrics: Metrics
    alone_running: bool = False  # set by the main loop, cleared by the batch thread

    def __post_init__(self) -> None:
        self._health = Availability(
            log, self.metrics.attempt_errors, "attempt counter unavailable, the "
            "poison-record guard is off until Redis answers", "attempt counter reachable again")
        self._lock = threading.Lock()
        self._to_forget: list[Coordinates] = []
        # uploads to process alone, one at a time with nothing else in flight: an earlier
        # attempt did not finish, so any of them may be what kills a process
        self._alone: deque[Job] = deque()

    # --- attempt counts ---------------------------------------------------------------------

    def prior_attempts(self, polled: Mapping[TP, list[Record]]) -> dict[Coordinates, int]:
        """Attempts other processes (or this one, before a restart) started on these records
        without finishing them. One Redis round trip per poll."""
        if self.attempts is None or not polled:
            return {}
        coords = [(r.topic, r.partition, r.offset) for rs in polled.values() for r in rs]
        try:
            counts = self.attempts.counts(coords)
            self._health.up()
        except StoreError as exc:
            self._health.down(exc)
            return {}
        return {c: n for c, n in zip(coords, counts, strict=True) if n}

    def start(self, jobs: list[Job], reject: Callable[[Job, str], None]) -> list[Job]:
        """Count an attempt for each job before any work on it starts; a job past the limit
        (counted meanwhile by another process) goes to ``reject`` with the poison message."""
        if self.attempts is None:
            return jobs
        try:
            counts = self.attempts.start([j.coordinates for j in jobs])
            self._health.up()
        except StoreError as exc:
            self._health.down(exc)
            return jobs
        out = []
        for job, n in zip(jobs, counts, strict=True):
            if n > self.limit:
                reject(job, poison_message(n - 1, self.limit))
            else:
                out.append(job)
        return out

    def settled(self, coordinates: Coordinates) -> None:
        """The record has its outcome (producer thread): forget its attempts."""
        if self.attempts is not None:
            with self._lock:
                self._to_forget.append(coordinates)

    def forget_settled(self) -> None:
        """Main loop: delete the counts of what was settled since the last call."""
        if self.attempts is None or not self._to_forget:
            return
        with self._lock:
            settled, self._to_forget = self._to_forget, []
        try:
            self.attempts.forget(settled)
            self._health.up()
        except StoreError as exc:
            self._health.down(exc)  # the counts expire; a replay is processed alone

    # --- processing alone -------------------------------------------------------------------

    def isolate(self, jobs: list[Job], cause: str) -> None:
        """Queue jobs to be processed one at a time (``cause``: unfinished_attempt, or
        failed_batch when a batch failed in a way one of them may have caused)."""
        self.metrics.isolated.labels(cause).inc(len(jobs))
        self._alone.extend(jobs)  # deque: safe to append from a batch thread

    def waiting_alone(self) -> int:
        return len(self._alone)

    def next_alone(self, owns: Callable[[Job], bool]) -> Job | None:
        """The next queued job this member still owns (others are dropped: their partition's
        new owner processes them)."""
        while self._alone:
            job = self._alone.popleft()
            if owns(job):
                return job
        return None
