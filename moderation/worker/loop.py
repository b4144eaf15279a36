"""The streaming worker: upload events in, decisions (or dead letters) out, at least once.

Threads and what they own:
    main        the Kafka consumer (poll, pause/resume, commit), parsing, batching
    batch-N     validation, the Triton call (with backoff while it is down), scoring, sends
    producer    kafka-python's sender; its acknowledgements feed the offset tracker
    kafka IO    kafka-python's event loop; runs the rebalance listener
The offset tracker and partition epochs are shared, under one lock. An offset is committed
only when every message up to it has a broker-acknowledged decision or dead letter.

No record can stop the worker: an unexpected exception dead-letters its upload as
internal_error, and a record whose attempts keep dying (counted in Redis before work
starts) is processed alone, then dead-lettered as poison_record (README: Delivery).
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from moderation import faults
from moderation.config import Settings
from moderation.contract.errors import EncoderError, EncoderUnavailable, ImageError
from moderation.contract.events import (
    Decision,
    InputError,
    Upload,
    dead_letter_headers,
    parse_upload,
)
from moderation.core.batching import Batcher, decide, started_at
from moderation.core.images import inspect_image
from moderation.core.offsets import OffsetTracker
from moderation.edges.attempt_counter import AttemptCounter, Coordinates
from moderation.edges.decision_ledger import DecisionLedger, ledger_key
from moderation.edges.encoders import Encoder, RejectedImage
from moderation.edges.fetch import Fetcher, FetchError
from moderation.edges.kafka_io import Headers, Publisher, Record
from moderation.edges.live_policies import ActivePolicies, LivePolicies
from moderation.edges.metrics import Metrics
from moderation.edges.net import port_open
from moderation.edges.policy_store import StoreError
from moderation.edges.side_store import Availability

log = logging.getLogger(__name__)

TP = Any  # kafka.TopicPartition: a (topic, partition) named tuple


def _canary_image() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (128, 128, 128)).save(buf, "PNG")
    return buf.getvalue()


# a known-good image: when it embeds, Triton is healthy, so a failure just before or after
# it was about the uploads sent, not an outage
CANARY = _canary_image()


@dataclass(frozen=True)
class Job:
    """One parsed upload waiting for its decision."""

    tp: TP
    epoch: int
    record: Record
    upload: Upload
    started: datetime
    image: bytes | None  # the upload's bytes, or fetched from its image_url

    @property
    def coordinates(self) -> Coordinates:
        return (self.record.topic, self.record.partition, self.record.offset)


@dataclass(frozen=True)
class Send:
    """One decision or dead letter on its way to the broker, and what its ack settles."""

    tp: TP
    epoch: int
    offset: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    decision: Decision | None = None
    error_type: str | None = None
    attempt: int = 0
    not_before: float = 0.0


class Worker:
    def __init__(self, settings: Settings, consumer: Any, publisher: Publisher,
                 encoder: Encoder, policies: LivePolicies, metrics: Metrics,
                 ledger: DecisionLedger | None = None,
                 attempts: AttemptCounter | None = None) -> None:
        self.settings = settings
        self.ledger = ledger
        self.attempts = attempts  # None: no poison-record guard (unit tests)
        self._to_forget: list[Coordinates] = []
        # uploads to process alone, one at a time with nothing else in flight: an earlier
        # attempt did not finish, so any of them may be what kills a process
        self._alone: deque[Job] = deque()
        self._alone_running = False
        self._triton_ok_at = 0.0  # last time an embed succeeded (0: unknown)
        self._attempts_health = Availability(
            log, metrics.attempt_errors, "attempt counter unavailable, the poison-record guard "
            "is off until Redis answers", "attempt counter reachable again")
        self._faults = settings.faults.enabled
        self._poll_failing = False
        self._to_record: list[str] = []
        self._ledger_health = Availability(
            log, metrics.dedupe_errors, "decision ledger unavailable, replays may repeat "
            "decisions", "decision ledger reachable again")
        self.consumer = consumer  # kafka-python KafkaConsumer (untyped); main thread only
        self.publisher = publisher
        self.encoder = encoder
        self.policies = policies
        self.metrics = metrics
        w = settings.worker
        self._batcher: Batcher[Job] = Batcher(settings.triton.batch_size,
                                              w.batch_linger_ms / 1000)
        self._executor = ThreadPoolExecutor(w.concurrent_batches, thread_name_prefix="batch")
        self.fetcher = Fetcher(settings.fetch.policy())
        self._fetch_pool = ThreadPoolExecutor(settings.fetch.concurrency,
                                              thread_name_prefix="fetch")
        self._futures: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._tracker = OffsetTracker()
        self._epochs: dict[TP, int] = {}
        # partitions this member owns now; the rebalance listener (kafka IO thread) keeps it
        self._owned: set[TP] = set()
        # owned partitions not yet moved to their committed offset
        self._unpositioned: set[TP] = set()
        self._retries: list[Send] = []
        self._stop = threading.Event()
        self._abandon = threading.Event()
        self._fatal: BaseException | None = None
        self._paused = False
        self._tick = time.monotonic()
        self._triton_failing = False
        self._broker_checked = (0.0, False)
        self.stats = {"decided": 0, "dead_lettered": 0, "duplicates_skipped": 0}

    # --- lifecycle ------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to stop polling, finish what it can, commit and leave the group."""
        self._stop.set()

    def run(self, idle_exit_s: float | None = None) -> None:
        """Consume until ``stop()``, a fatal error, or ``idle_exit_s`` without any work."""
        from kafka import ConsumerRebalanceListener

        worker = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Iterable[TP]) -> None:
                worker._revoke(revoked, commit=True)

            def on_partitions_assigned(self, assigned: Iterable[TP]) -> None:
                worker._assign(assigned)

            def on_partitions_lost(self, lost: Iterable[TP]) -> None:
                worker._revoke(lost, commit=False)

        topic = self.settings.kafka.input_topic
        self.consumer.subscribe([topic], listener=Listener())
        log.info("consuming topic=%s group=%s", topic, self.settings.kafka.group_id)
        last_work = last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                now = self._tick = time.monotonic()
                self._resend_due(now)
                self._record_decided()
                self._position_assigned()
                self._flow_control()
                room = self.settings.worker.max_in_flight - self.in_flight()
                polled = self._poll(room)
                now = time.monotonic()
                if polled is None:  # a failed poll is not idleness: nothing is known
                    last_work, polled = now, {}
                prior = self._prior_attempts(polled)
                for tp, records in polled.items():
                    for record in records:
                        self._accept(tp, record, now, prior.get(
                            (record.topic, record.partition, record.offset), 0))
                if polled or self.in_flight() or not self._assigned_any():
                    last_work = now  # idle means: owning partitions and nothing to do
                self._submit_ready(now)
                if now - last_commit >= self.settings.worker.commit_interval_s:
                    self._commit()
                    self._update_lag()
                    last_commit = now
                if idle_exit_s is not None and now - last_work >= idle_exit_s:
                    log.info("idle for %.1f s with nothing in flight: exiting", idle_exit_s)
                    break
        finally:
            self._shutdown()
        if self._fatal is not None:
            raise self._fatal

    def _poll(self, room: int) -> Mapping[TP, list[Record]] | None:
        """One poll; an exception pauses the loop briefly instead of stopping the worker
        (None then)."""
        try:
            polled: Mapping[TP, list[Record]] = self.consumer.poll(
                timeout_ms=100, max_records=max(1, room))  # in-flight stays bounded
        except Exception as exc:
            self.metrics.poll_errors.inc()
            if not self._poll_failing:
                log.warning("poll failed (retrying; nothing is skipped): %s: %s",
                            type(exc).__name__, exc)
            self._poll_failing = True
            self._abandon.wait(0.5)
            return None
        if self._poll_failing:
            log.info("polling again")
            self._poll_failing = False
        return polled

    def _shutdown(self) -> None:
        w = self.settings.worker
        abandoned = len(self._batcher) + len(self._alone)
        log.info("stopping: in_flight=%d (unsubmitted %d abandoned uncommitted)",
                 self.in_flight(), abandoned)
        deadline = time.monotonic() + w.drain_timeout_s
        for fut in list(self._futures):
            try:
                fut.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                break
            except Exception:  # already logged by the batch; fatal is recorded
                pass
        if any(not f.done() for f in self._futures):
            log.warning("drain timeout: abandoning in-flight batches; they stay uncommitted")
        self._abandon.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._fetch_pool.shutdown(wait=False, cancel_futures=True)
        self.publisher.flush(max(1.0, deadline - time.monotonic()))
        self._record_decided()
        self._commit()
        try:
            self.consumer.close(autocommit=False)  # leaves the group: partitions move now
        except Exception as exc:
            log.warning("consumer close failed: %s", exc)
        log.info("stopped: decided=%d dead_lettered=%d in_flight_uncommitted=%d",
                 self.stats["decided"], self.stats["dead_lettered"], self.in_flight())

    # --- health ---------------------------------------------------------------------------

    def in_flight(self) -> int:
        with self._lock:
            return self._tracker.in_flight()

    def live(self) -> bool:
        return time.monotonic() - self._tick < 60.0

    def readiness(self) -> dict[str, bool]:
        ready_fn = getattr(self.encoder, "ready", None)
        triton = (ready_fn() if ready_fn else True) and not self._triton_failing
        checks = {"broker": self._broker_reachable(), "triton": bool(triton),
                  "policies": self.policies.active is not None}
        self.metrics.ready.set(1 if all(checks.values()) else 0)
        return checks

    def _broker_reachable(self) -> bool:
        checked_at, ok = self._broker_checked
        if time.monotonic() - checked_at >= 2.0:  # probes come often; connect at most every 2 s
            servers = [s.strip().rpartition(":") for s in
                       self.settings.kafka.bootstrap_servers.split(",")]
            ok = any(port.isdigit() and port_open(int(port), host or "127.0.0.1")
                     for host, _, port in servers)
            self._broker_checked = (time.monotonic(), ok)
        return ok

    # --- main thread: accept, batch, commit ----------------------------------------------

    def _accept(self, tp: TP, record: Record, now: float, prior_attempts: int = 0) -> None:
        with self._lock:
            if tp not in self._owned or tp in self._unpositioned:
                # fetched around a rebalance that ran while poll() was returning. Revoked:
                # the new owner reads it again from the committed offset, and tracking it
                # would let this member commit past what that owner has decided. Assigned
                # again but not yet positioned: it may come from the old fetch position.
                return
            self._tracker.track(tp, record.offset)  # a redelivery is decided again, never skipped
            epoch = self._epochs.setdefault(tp, 0)
        limit = self.settings.worker.max_attempts
        if prior_attempts >= limit:  # decided nothing, but killed a process each time
            self._dead_letter(tp, epoch, record, "poison_record", _poison_message(
                prior_attempts, limit))
            return
        try:
            upload = parse_upload(record.value, record.headers or [],
                                  self.settings.kafka.max_message_bytes)
            job = Job(tp, epoch, record, upload, started_at(upload, record.timestamp),
                      upload.image)
        except InputError as exc:
            self._dead_letter(tp, epoch, record, exc.reason, str(exc))
            return
        except Exception as exc:  # a bug meeting odd input: that record, not the worker
            self._internal_error(tp, epoch, record, "parse", exc)
            return
        if prior_attempts > 0:
            log.warning("processing alone: an earlier attempt did not finish topic=%s "
                        "partition=%d offset=%d upload_id=%s attempts=%d", record.topic,
                        record.partition, record.offset, upload.upload_id, prior_attempts)
            self.metrics.isolated.labels("unfinished_attempt").inc()
            self._alone.append(job)
        else:
            self._batcher.add(job, now)

    def _prior_attempts(self, polled: Mapping[TP, list[Record]]) -> dict[Coordinates, int]:
        """Attempts other processes (or this one, before a restart) started on these records
        without finishing them. One Redis round trip per poll."""
        if self.attempts is None or not polled:
            return {}
        coords = [(r.topic, r.partition, r.offset) for rs in polled.values() for r in rs]
        try:
            counts = self.attempts.counts(coords)
            self._attempts_health.up()
        except StoreError as exc:
            self._attempts_health.down(exc)
            return {}
        return {c: n for c, n in zip(coords, counts, strict=True) if n}

    def _submit_ready(self, now: float) -> None:
        """Hand batches to the batch threads. An upload to process alone waits until nothing
        else is in flight and runs by itself, so that if it kills a process (or Triton's
        stub) no other upload is counted as an attempt with it."""
        if self._alone_running:
            return
        if self._alone:
            if self._futures:
                return  # let the batches in flight finish first; start no new ones
            while self._alone:
                job = self._alone.popleft()
                if self._owns(job):
                    self._alone_running = True
                    self._start([job], alone=True)
                    return
        while (batch := self._batcher.take(now)) is not None:
            batch = [j for j in batch if self._owns(j)]
            if batch:
                self._start(batch, alone=False)

    def _owns(self, job: Job) -> bool:
        with self._lock:  # a revoked partition's jobs belong to its new owner now
            return self._epochs.get(job.tp) == job.epoch

    def _start(self, jobs: list[Job], alone: bool) -> None:
        fut = self._executor.submit(self._process, jobs, alone)
        self._futures.add(fut)
        fut.add_done_callback(self._futures.discard)

    def _assigned_any(self) -> bool:
        return bool(self.consumer.assignment())

    def _flow_control(self) -> None:
        limit = self.settings.worker.max_in_flight
        n = self.in_flight()
        self.metrics.in_flight.set(n)
        if n >= limit:
            assigned = self.consumer.assignment()
            if assigned:
                self.consumer.pause(*assigned)
            if not self._paused:
                log.info("pausing consumption: in_flight=%d >= %d", n, limit)
            self._paused = True
        elif self._paused and n < limit // 2:
            self.consumer.resume(*self.consumer.paused())
            self._paused = False
            log.info("resuming consumption: in_flight=%d", n)

    def _commit(self) -> None:
        from kafka.structs import OffsetAndMetadata

        with self._lock:
            offsets: dict[TP, int] = dict(self._tracker.all_committable())
        if not offsets:
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()})
        except Exception as exc:  # rebalance in progress, coordinator moved: retry next round
            self.metrics.commits.labels("error").inc()
            log.warning("offset commit failed (will retry): %s", exc)
            return
        self.metrics.commits.labels("ok").inc()
        with self._lock:
            for tp, offset in offsets.items():
                self._tracker.mark_committed(tp, offset)
        log.debug("committed %s", {f"{tp.topic}/{tp.partition}": o for tp, o in offsets.items()})

    def _update_lag(self) -> None:
        assigned = self.consumer.assignment()
        self.metrics.assigned_partitions.set(len(assigned))
        for tp in assigned:
            high = self.consumer.highwater(tp)  # Tansu's ListOffsets is wrong; fetch is right
            if high is None:
                continue
            try:
                position = self.consumer.position(tp, timeout_ms=0)
            except Exception:
                continue
            if position is not None:
                self.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, high - position))

    def _assign(self, tps: Iterable[TP]) -> None:
        tps = list(tps)
        with self._lock:
            self._owned.update(tps)
            self._unpositioned.update(tps)
        log.info("partitions assigned: %s", _names(tps))

    def _position_assigned(self) -> None:
        """Move each newly assigned partition to its committed offset before accepting any
        of its records.

        kafka-python 3 applies an assignment on its IO thread while ``poll()`` drains
        buffered fetches on this one, so the first records after a rebalance can come from
        the old fetch position, ahead of the committed offset (the chaos run lost uploads
        that way: the tracker's prefix started past them) or behind it. The prefix must
        start exactly where the previous owner's commit ends.
        """
        if not self._unpositioned:  # every turn of the loop: nothing to do but this check
            return
        with self._lock:  # a revocation bumps the epoch: it tells whether tp changed hands
            todo = {tp: self._epochs.get(tp, 0) for tp in self._unpositioned}
        for tp, epoch in todo.items():
            try:
                offset = self.consumer.committed(tp, timeout_ms=2000)
                if offset is None:
                    self.consumer.seek_to_beginning(tp)  # as auto_offset_reset=earliest
                else:
                    self.consumer.seek(tp, offset)
            except Exception as exc:  # revoked meanwhile, coordinator moving: next round
                log.warning("cannot move to the committed offset yet topic=%s partition=%d: "
                            "%s", tp.topic, tp.partition, exc)
                continue
            with self._lock:
                if self._epochs.get(tp, 0) == epoch:  # else revoked (and maybe back) since
                    self._unpositioned.discard(tp)
            log.info("starting at the committed offset topic=%s partition=%d offset=%s",
                     tp.topic, tp.partition, "earliest" if offset is None else offset)

    def _revoke(self, tps: Iterable[TP], commit: bool) -> None:
        """Rebalance listener (kafka IO thread): commit what is acknowledged, forget the rest.

        Uses ``commit_async``: blocking calls from the IO thread would deadlock, and the
        request is queued ahead of the re-join, while this member still owns the partitions.
        """
        from kafka.structs import OffsetAndMetadata

        tps = list(tps)
        if not tps:
            return
        offsets = {}
        with self._lock:
            self._owned.difference_update(tps)
            for tp in tps:
                self._unpositioned.discard(tp)
                offset = self._tracker.revoke(tp)
                if offset is not None:
                    offsets[tp] = OffsetAndMetadata(offset, "", -1)
                self._epochs[tp] = self._epochs.get(tp, 0) + 1
        for tp in tps:
            with contextlib.suppress(KeyError):
                self.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
        acked = {f"{tp.topic}/{tp.partition}": o.offset for tp, o in offsets.items()}
        if commit:
            log.info("partitions revoked: %s; committing %s", _names(tps), acked)
        else:  # evicted from the group: a commit would be refused
            log.warning("partitions lost: %s; acknowledged but uncommitted %s", _names(tps), acked)
        if commit and offsets:
            try:
                self.consumer.commit_async(offsets)
            except Exception as exc:
                log.warning("commit on revocation failed: %s", exc)

    # --- sends and their acknowledgements ------------------------------------------------

    def _send(self, send: Send) -> None:
        self.publisher.publish(send.topic, send.key, send.value, send.headers,
                               lambda exc: self._on_sent(send, exc))

    def _on_sent(self, send: Send, exc: Exception | None) -> None:
        """Producer thread: settle the message, or queue the send for a retry."""
        if exc is not None:
            self.metrics.publish_errors.inc()
            delay = min(0.1 * 2 ** send.attempt, 5.0)
            log.warning("send to topic=%s failed (attempt %d, retrying in %.1f s) "
                        "partition=%d offset=%d: %s", send.topic, send.attempt + 1, delay,
                        send.tp.partition, send.offset, exc)
            with self._lock:
                self._retries.append(replace(send, attempt=send.attempt + 1,
                                             not_before=time.monotonic() + delay))
            return
        m = self.metrics
        if send.decision is not None:
            d = send.decision
            log.debug("decided upload_id=%s decision=%s flagged=%s partition=%d offset=%d "
                      "policy_version=%d", d.upload_id, d.decision,
                      ",".join(d.flagged_policies) or "-", send.tp.partition, send.offset,
                      d.policy_version)
            m.messages.labels("decided").inc()
            m.decisions.labels(d.decision).inc()
            for policy in d.flagged_policies:
                m.flags.labels(policy).inc()
            # decided_at - latency = the event's creation; the ack is when it is really out
            m.end_to_end_seconds.observe(
                max(0.0, (datetime.now(UTC) - d.decided_at).total_seconds() + d.latency_ms / 1000))
            if self.ledger is not None:
                with self._lock:  # written by the main loop, never on the producer's thread
                    self._to_record.append(ledger_key(d.upload_id, d.policy_version))
        else:
            m.messages.labels("dead_lettered").inc()
            m.dead_letters.labels(send.error_type or "unknown").inc()
        self._settle(send.tp, send.epoch, send.offset,
                     "decided" if send.decision else "dead_lettered")

    def _settle(self, tp: TP, epoch: int, offset: int, outcome: str) -> None:
        """The message has its outcome: count it and let the tracker move past it."""
        with self._lock:
            self.stats[outcome] += 1
            if self._epochs.get(tp) == epoch:  # else revoked: the new owner redoes it
                self._tracker.ack(tp, offset)
            if self.attempts is not None:
                self._to_forget.append((tp.topic, tp.partition, offset))

    def _resend_due(self, now: float) -> None:
        with self._lock:
            due = [s for s in self._retries if s.not_before <= now]
            self._retries = [s for s in self._retries if s.not_before > now]
        for send in due:
            if self._epochs.get(send.tp) == send.epoch:
                self._send(send)

    def _dead_letter(self, tp: TP, epoch: int, record: Record, error_type: str, message: str,
                     upload_id: str | None = None) -> None:
        log.warning("dead letter topic=%s partition=%d offset=%d upload_id=%s error_type=%s: %s",
                    record.topic, record.partition, record.offset, upload_id or _key(record),
                    error_type, message[:300])
        headers = dead_letter_headers(list(record.headers or []), error_type, message,
                                      record.topic, record.partition, record.offset)
        value, limit = record.value, self.settings.kafka.max_message_bytes
        if value is not None and len(value) > limit:  # would not fit the dead-letter topic
            headers.append(("value-truncated-from", str(len(value)).encode()))
            value = value[:limit]
        self._send(Send(tp, epoch, record.offset, self.settings.kafka.dead_letter_topic,
                        record.key, value, headers, error_type=error_type))

    # --- batch threads ---------------------------------------------------------------------

    def _process(self, jobs: list[Job], alone: bool) -> None:
        """A batch thread: every job ends with a send (decision or dead letter), a settle
        (already decided), or back in the queue to be processed alone. Nothing an upload
        contains can stop the worker: an unexpected exception breaks the batch up, and an
        upload that raises alone is dead-lettered as internal_error."""
        done: set[Coordinates] = set()
        stage = ["validate"]  # the stage that raised, for the dead letter and the metric
        try:
            if alone and not self._await_triton():
                return  # abandoned (shutdown) while Triton was down
            jobs = self._count_attempts(jobs, done)
            self._decide(jobs, done, alone, stage)
        except Exception as exc:
            rest = [j for j in jobs if j.coordinates not in done]
            if alone or len(rest) == 1:
                for job in rest:
                    self._internal_error(job.tp, job.epoch, job.record, stage[0], exc,
                                         job.upload.upload_id)
            elif rest:
                log.warning("batch of %d failed in %s (%s: %s); processing each upload alone",
                            len(rest), stage[0], type(exc).__name__, exc)
                self._process_alone(rest, "failed_batch")
        except BaseException as exc:  # SystemExit, KeyboardInterrupt: not about an upload
            log.exception("batch of %d stopped by %s; stopping the worker uncommitted",
                          len(jobs), type(exc).__name__)
            self._fatal = exc
            self._stop.set()
        finally:
            if alone:
                self._alone_running = False

    def _process_alone(self, jobs: list[Job], cause: str) -> None:
        self.metrics.isolated.labels(cause).inc(len(jobs))
        self._alone.extend(jobs)  # deque: safe to append from this thread

    def _count_attempts(self, jobs: list[Job], done: set[Coordinates]) -> list[Job]:
        """Count an attempt for each job before any work on it starts; a job past the limit
        (counted meanwhile by another process) is dead-lettered as poison_record."""
        if self.attempts is None:
            return jobs
        try:
            counts = self.attempts.start([j.coordinates for j in jobs])
            self._attempts_health.up()
        except StoreError as exc:
            self._attempts_health.down(exc)
            return jobs
        limit = self.settings.worker.max_attempts
        for job, n in zip(jobs, counts, strict=True):
            if n > limit:
                self._reject(job, done, "poison_record", _poison_message(n - 1, limit))
        return [j for j in jobs if j.coordinates not in done]

    def _reject(self, job: Job, done: set[Coordinates], error_type: str, message: str) -> None:
        done.add(job.coordinates)
        self._dead_letter(job.tp, job.epoch, job.record, error_type, message,
                          job.upload.upload_id)

    def _fetch_urls(self, jobs: list[Job], done: set[Coordinates]) -> list[Job]:
        """Fetch the ``image_url`` uploads of a batch concurrently; failures dead-letter."""
        to_fetch = [j for j in jobs if j.image is None and j.upload.image_url]
        if not to_fetch:
            return jobs
        results = dict(zip((id(j) for j in to_fetch),
                           self._fetch_pool.map(self._fetch_one, to_fetch), strict=True))
        out = []
        for job in jobs:
            got = results.get(id(job), job.image)
            if isinstance(got, FetchError):
                self._reject(job, done, got.reason, str(got))
            elif isinstance(got, Exception):
                done.add(job.coordinates)
                self._internal_error(job.tp, job.epoch, job.record, "fetch", got,
                                     job.upload.upload_id)
            else:
                out.append(replace(job, image=got))
        return out

    def _fetch_one(self, job: Job) -> bytes | Exception:
        try:
            return self.fetcher.fetch(job.upload.image_url or "")
        except Exception as exc:  # FetchError: a reason; anything else: internal_error
            return exc

    def _validate(self, jobs: list[Job], done: set[Coordinates]) -> list[Job]:
        valid = []
        limits = self.settings.images.limits()
        for job in jobs:
            try:
                if self._faults:
                    faults.inject(job.image or b"", "worker")
                inspect_image(job.image or b"", limits)
                valid.append(job)
            except ImageError as exc:
                self._reject(job, done, exc.reason, str(exc))
            except Exception as exc:
                done.add(job.coordinates)
                self._internal_error(job.tp, job.epoch, job.record, "validate", exc,
                                     job.upload.upload_id)
        return valid

    def _decide(self, jobs: list[Job], done: set[Coordinates], alone: bool,
                stage: list[str]) -> None:
        m = self.metrics
        stage[0] = "fetch"
        jobs = self._fetch_urls(jobs, done)
        stage[0] = "validate"
        t0 = time.perf_counter()
        valid = self._validate(jobs, done)
        t1 = time.perf_counter()
        m.stage_seconds.labels("validate").observe(t1 - t0)
        active = self._await_policies()
        if active is None:
            return
        valid = self._skip_already_decided(valid, active.version, done)
        if not valid:
            return
        stage[0] = "infer"
        t1 = time.perf_counter()
        embedded = self._embed(valid, done, alone)
        t2 = time.perf_counter()
        m.stage_seconds.labels("infer").observe(t2 - t1)
        if not embedded:
            return  # abandoned (shutdown), handed on to be processed alone, or all rejected
        m.batch_size.observe(len(embedded))
        stage[0] = "score"
        t3 = time.perf_counter()
        decisions = decide([(j.upload, j.started) for j, _ in embedded],
                           np.stack([e for _, e in embedded]), active.matrix, active.version,
                           active.model)
        t4 = time.perf_counter()
        m.stage_seconds.labels("score").observe(t4 - t3)
        stage[0] = "publish"
        topic = self.settings.kafka.decision_topic
        for (job, _), decision in zip(embedded, decisions, strict=True):
            try:
                value = decision.to_bytes()
            except Exception as exc:
                done.add(job.coordinates)
                self._internal_error(job.tp, job.epoch, job.record, "publish", exc,
                                     job.upload.upload_id)
                continue
            done.add(job.coordinates)
            self._send(Send(job.tp, job.epoch, job.record.offset, topic,
                            job.upload.upload_id.encode(), value, [], decision=decision))
        m.stage_seconds.labels("publish").observe(time.perf_counter() - t4)

    def _embed(self, jobs: list[Job], done: set[Coordinates], alone: bool
               ) -> list[tuple[Job, NDArray[Any]]] | None:
        """Embeddings for the jobs Triton accepts; rejected images are dead-lettered (found
        by bisection, so one bad image costs ~2 log2(batch) extra requests).

        A failed call is an outage or an upload that breaks Triton (a stub crash, a hang
        past the deadline): the two look alike. So: wait until a known-good image embeds
        again (an outage: retry with backoff, never give up on an upload), retry the batch
        once, and if it fails again process each upload alone. Alone, a failure counts as
        one more attempt for that upload, which becomes a poison_record after
        ``max_attempts``. None when abandoned or handed on."""
        failures = 0
        while not self._abandon.is_set():
            try:
                emb = self.encoder.embed_images([j.image or b"" for j in jobs])
            except RejectedImage as exc:
                self.metrics.triton_errors.labels("rejected").inc()
                if len(jobs) == 1:
                    self._reject(jobs[0], done, exc.reason, str(exc))
                    return []
                mid = len(jobs) // 2
                left = self._embed(jobs[:mid], done, alone)
                right = self._embed(jobs[mid:], done, alone)
                return None if left is None or right is None else left + right
            except EncoderError as exc:
                kind = "unavailable" if isinstance(exc, EncoderUnavailable) else "other"
                self.metrics.triton_errors.labels(kind).inc()
                self._triton_ok_at = 0.0
                failures += 1
                if alone or failures >= 2:
                    log.warning("Triton failed on %s (%s); %s: %s",
                                _ids(jobs), kind, "will retry it alone, counting an attempt"
                                if alone else "processing each upload alone", exc)
                    if not self._await_triton():
                        return None
                    for job in jobs:
                        done.add(job.coordinates)
                    self._process_alone(jobs, "failed_batch")
                    return None
                if not self._await_triton(first_error=exc):
                    return None
                continue
            self._triton_ok_at = time.monotonic()
            return list(zip(jobs, emb, strict=True))
        return None

    def _await_triton(self, first_error: Exception | None = None) -> bool:
        """Until a known-good image embeds (Triton healthy); False when abandoned. Skipped
        when an embed succeeded within the last second."""
        if time.monotonic() - self._triton_ok_at < 1.0:  # zeroed by any failed call
            return True
        backoff = 0.1
        while not self._abandon.is_set():
            try:
                self.encoder.embed_images([CANARY])
            except EncoderError as exc:
                self.metrics.triton_errors.labels(
                    "unavailable" if isinstance(exc, EncoderUnavailable) else "other").inc()
                if not self._triton_failing:
                    log.warning("Triton call failed; waiting until it embeds a known-good "
                                "image, nothing is committed meanwhile: %s",
                                first_error or exc)
                self._triton_failing = True
                self._abandon.wait(backoff)
                backoff = min(backoff * 2, self.settings.worker.retry_max_s)
                continue
            if self._triton_failing:
                log.info("Triton answers again")
                self._triton_failing = False
            self._triton_ok_at = time.monotonic()
            return True
        return False

    def _skip_already_decided(self, jobs: list[Job], version: int, done: set[Coordinates]
                              ) -> list[Job]:
        """Settle, without publishing again, uploads whose decision for this policy version
        the broker already acknowledged (a replay after a crash or rebalance)."""
        if self.ledger is None:
            return jobs
        keys = [ledger_key(j.upload.upload_id, version) for j in jobs]
        try:
            decided = self.ledger.decided(keys)
            self._ledger_health.up()
        except StoreError as exc:
            self._ledger_health.down(exc)
            return jobs  # decide again: a duplicate at worst, never a loss
        if not decided:
            return jobs
        for job, key in zip(jobs, keys, strict=True):
            if key in decided:
                log.info("already decided upload_id=%s policy_version=%d partition=%d "
                         "offset=%d: not publishing again", job.upload.upload_id, version,
                         job.record.partition, job.record.offset)
                self.metrics.messages.labels("duplicate_skipped").inc()
                done.add(job.coordinates)
                self._settle(job.tp, job.epoch, job.record.offset, "duplicates_skipped")
        return [j for j, k in zip(jobs, keys, strict=True) if k not in decided]

    def _record_decided(self) -> None:
        """Main loop: write what the producer thread settled to Redis (ledger, attempts)."""
        if self.attempts is not None and self._to_forget:
            with self._lock:
                settled, self._to_forget = self._to_forget, []
            try:
                self.attempts.forget(settled)
                self._attempts_health.up()
            except StoreError as exc:
                self._attempts_health.down(exc)  # the counts expire; a replay is processed alone
        if self.ledger is None:
            return
        with self._lock:
            keys, self._to_record = self._to_record, []
        try:
            self.ledger.record(keys)
            if keys:
                self._ledger_health.up()
        except StoreError as exc:
            self._ledger_health.down(exc)

    def _internal_error(self, tp: TP, epoch: int, record: Record, stage: str, exc: Exception,
                        upload_id: str | None = None) -> None:
        """An exception nobody expected while handling this one record: dead-letter it,
        count it, log it with its coordinates and a traceback, and go on."""
        log.error("internal error in %s topic=%s partition=%d offset=%d upload_id=%s",
                  stage, record.topic, record.partition, record.offset,
                  upload_id or _key(record), exc_info=exc)
        self.metrics.internal_errors.labels(stage).inc()
        self._dead_letter(tp, epoch, record, "internal_error",
                          f"{stage}: {type(exc).__name__}: {exc}", upload_id)

    def _await_policies(self) -> ActivePolicies | None:
        while not self._abandon.is_set():
            active = self.policies.active or self.policies.wait_loaded(0.5)
            if active is not None:
                return active
        return None


def _names(tps: Iterable[TP]) -> str:
    return ",".join(sorted(f"{tp.topic}/{tp.partition}" for tp in tps)) or "-"


def _key(record: Record) -> str:
    return record.key.decode("utf-8", "replace")[:80] if record.key else "-"


def _ids(jobs: list[Job]) -> str:
    shown = ",".join(j.upload.upload_id for j in jobs[:5])
    return f"upload_id={shown}" + (f" (+{len(jobs) - 5} more)" if len(jobs) > 5 else "")


def _poison_message(attempts: int, limit: int) -> str:
    return (f"work on this record started {attempts} times without finishing (limit {limit}): "
            "each time its worker died or Triton failed on it alone; not processed again")
