"""Everything the worker sends, and what each acknowledgement settles: decisions, review
records and dead letters out, retries with backoff, the decision ledger, and the per-outcome
counts.

A record is settled only when the broker acknowledges its decision (and its review record,
when a review policy matched) or its dead letter, or the ledger says its decision is already
out; then its offset may be committed.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime

from moderation.config import Settings
from moderation.contract.events import Decision, dead_letter_headers
from moderation.edges.attempt_counter import Coordinates
from moderation.edges.decision_ledger import DecisionLedger, ledger_key
from moderation.edges.kafka_io import Publisher, Record
from moderation.edges.metrics import Metrics
from moderation.edges.policy_store import StoreError
from moderation.edges.side_store import Availability
from moderation.worker.guard import PoisonGuard
from moderation.worker.jobs import TP, Job, Pending, Send, record_key
from moderation.worker.partitions import Partitions

log = logging.getLogger(__name__)


class Outbox:
    def __init__(self, settings: Settings, publisher: Publisher, partitions: Partitions,
                 guard: PoisonGuard, metrics: Metrics, ledger: DecisionLedger | None) -> None:
        self.kafka = settings.kafka
        self.publisher = publisher
        self.partitions = partitions
        self.guard = guard
        self.metrics = metrics
        self.ledger = ledger
        self._ledger_health = Availability(
            log, metrics.dedupe_errors, "decision ledger unavailable, replays may repeat "
            "decisions", "decision ledger reachable again")
        self._lock = threading.Lock()
        self._retries: list[Send] = []
        self._to_record: list[str] = []
        self.stats = {"decided": 0, "dead_lettered": 0, "duplicates_skipped": 0}

    # --- sending ----------------------------------------------------------------------------

    def decision(self, job: Job, decision: Decision, value: bytes) -> None:
        key = job.upload.upload_id.encode()
        send = Send(job.tp, job.epoch, job.record.offset, self.kafka.decision_topic, key, value,
                    [], decision=decision)
        if decision.review_policies:  # the same value to the review topic; settle on both
            send = replace(send, pending=Pending(2))
            self._send(replace(send, topic=self.kafka.review_topic, review=True))
        self._send(send)

    def dead_letter(self, tp: TP, epoch: int, record: Record, error_type: str, message: str,
                    upload_id: str | None = None) -> None:
        log.warning("dead letter topic=%s partition=%d offset=%d upload_id=%s error_type=%s: %s",
                    record.topic, record.partition, record.offset, upload_id or record_key(record),
                    error_type, message[:300])
        headers = dead_letter_headers(list(record.headers or []), error_type, message,
                                      record.topic, record.partition, record.offset)
        value, limit = record.value, self.kafka.max_message_bytes
        if value is not None and len(value) > limit:  # would not fit the dead-letter topic
            headers.append(("value-truncated-from", str(len(value)).encode()))
            value = value[:limit]
        self._send(Send(tp, epoch, record.offset, self.kafka.dead_letter_topic,
                        record.key, value, headers, error_type=error_type))

    def reject(self, job: Job, error_type: str, message: str) -> None:
        self.dead_letter(job.tp, job.epoch, job.record, error_type, message,
                         job.upload.upload_id)

    def internal_error(self, tp: TP, epoch: int, record: Record, stage: str, exc: Exception,
                       upload_id: str | None = None) -> None:
        """An exception nobody expected while handling this one record: dead-letter it,
        count it, log it with its coordinates and a traceback, and go on."""
        log.error("internal error in %s topic=%s partition=%d offset=%d upload_id=%s",
                  stage, record.topic, record.partition, record.offset,
                  upload_id or record_key(record), exc_info=exc)
        self.metrics.internal_errors.labels(stage).inc()
        self.dead_letter(tp, epoch, record, "internal_error",
                         f"{stage}: {type(exc).__name__}: {exc}", upload_id)

    def job_error(self, job: Job, stage: str, exc: Exception) -> None:
        self.internal_error(job.tp, job.epoch, job.record, stage, exc, job.upload.upload_id)

    def _send(self, send: Send) -> None:
        self.publisher.publish(send.topic, send.key, send.value, send.headers,
                               lambda exc: self._on_sent(send, exc))

    def resend_due(self, now: float) -> None:
        """Main loop: send again what failed and waited out its backoff."""
        with self._lock:
            due = [s for s in self._retries if s.not_before <= now]
            self._retries = [s for s in self._retries if s.not_before > now]
        for send in due:
            if self.partitions.owns(send.tp, send.epoch):
                self._send(send)

    def flush(self, timeout_s: float) -> None:
        self.publisher.flush(timeout_s)

    # --- acknowledgements -----------------------------------------------------------------

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
        if send.review:
            for policy in send.decision.review_policies if send.decision else ():
                m.reviews.labels(policy).inc()
        elif send.decision is not None:
            d = send.decision
            log.debug("decided upload_id=%s decision=%s flagged=%s partition=%d offset=%d "
                      "policy_version=%d", d.upload_id, d.decision,
                      ",".join(d.flagged_policies) or "-", send.tp.partition, send.offset,
                      d.policy_version)
            m.messages.labels("decided").inc()
            m.decisions.labels(d.decision).inc()
            for policy in d.flagged_policies:
                m.flags.labels(policy).inc()
            for policy in d.shadow_flagged_policies:
                m.shadow_flags.labels(policy).inc()
            # decided_at - latency = the event's creation; the ack is when it is really out
            m.end_to_end_seconds.observe(
                max(0.0, (datetime.now(UTC) - d.decided_at).total_seconds() + d.latency_ms / 1000))
        else:
            m.messages.labels("dead_lettered").inc()
            m.dead_letters.labels(send.error_type or "unknown").inc()
        if send.pending is not None:
            with self._lock:
                send.pending.remaining -= 1
                if send.pending.remaining:
                    return  # the record's other send is still out
        if send.decision is not None and self.ledger is not None:
            with self._lock:  # written by the main loop, never on the producer's thread
                self._to_record.append(ledger_key(send.decision.upload_id,
                                                  send.decision.policy_version))
        self.settle(send.tp, send.epoch, send.offset,
                    "decided" if send.decision else "dead_lettered")

    def settle(self, tp: TP, epoch: int, offset: int, outcome: str) -> None:
        """The message has its outcome: count it and let the tracker move past it."""
        with self._lock:
            self.stats[outcome] += 1
        self.partitions.ack(tp, epoch, offset)
        self.guard.settled((tp.topic, tp.partition, offset))

    # --- the decision ledger ------------------------------------------------------------------

    def skip_already_decided(self, jobs: list[Job], version: int, done: set[Coordinates]
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
                self.settle(job.tp, job.epoch, job.record.offset, "duplicates_skipped")
        return [j for j, k in zip(jobs, keys, strict=True) if k not in decided]

    def record_decided(self) -> None:
        """Main loop: write what the producer thread settled to the decision ledger."""
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
