"""The streaming worker: upload events in, decisions (or dead letters) out, at least once.

Threads and what they own:
    main        the Kafka consumer (poll, pause/resume, commit), parsing, batching
    batch-N     the batch pipeline: validation, the Triton call (with backoff while it is
                down), scoring, sends
    producer    delivers acknowledgements (kafka-python's sender, or the thread polling the
                librdkafka producer); they settle records in the outbox
    kafka IO    kafka-python's event loop, which runs the rebalance listener (librdkafka
                runs it on the main thread, inside poll); librdkafka's own C threads
The parts (this package): ``Partitions`` (consumer group membership and offsets),
``BatchPipeline`` (fetch, validate, embed, score, decide), ``Outbox`` (sends, acks,
retries, dead letters, decision ledger), ``PoisonGuard`` (attempt counts, processing
alone), ``TritonGate`` and ``Health``; ``Worker`` runs the main loop over them. An offset
is committed only when every message up to it has a broker-acknowledged decision or dead
letter.

No record can stop the worker: an unexpected exception dead-letters its upload as
internal_error, and a record whose attempts keep dying (counted in Redis before work
starts) is processed alone, then dead-lettered as poison_record (README: Delivery).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from moderation.config import Settings
from moderation.contract.events import InputError, parse_upload
from moderation.core.batching import Batcher, started_at
from moderation.edges.attempt_counter import AttemptCounter
from moderation.edges.decision_ledger import DecisionLedger
from moderation.edges.encoders import Encoder
from moderation.edges.kafka_io import Publisher, Record
from moderation.edges.live_policies import LivePolicies
from moderation.edges.metrics import Metrics
from moderation.edges.recent_index import RecentSink
from moderation.worker.guard import PoisonGuard, poison_message
from moderation.worker.health import Health
from moderation.worker.jobs import TP, Job
from moderation.worker.outbox import Outbox
from moderation.worker.partitions import Partitions
from moderation.worker.pipeline import BatchPipeline
from moderation.worker.triton_gate import TritonGate

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: Settings, consumer: Any, publisher: Publisher,
                 encoder: Encoder, policies: LivePolicies, metrics: Metrics,
                 ledger: DecisionLedger | None = None,
                 attempts: AttemptCounter | None = None,
                 recent: RecentSink | None = None) -> None:
        self.settings = settings
        self.policies = policies
        w = settings.worker
        self._stop = threading.Event()
        self._abandon = threading.Event()  # shutdown: waits end, work stays uncommitted
        self._fatal: BaseException | None = None
        self.partitions = Partitions(settings, consumer, metrics, self._abandon)
        self.guard = PoisonGuard(attempts, w.max_attempts, metrics)  # attempts None: no guard
        self.outbox = Outbox(settings, publisher, self.partitions, self.guard, metrics, ledger)
        self.gate = TritonGate(encoder, metrics, w.retry_max_s, self._abandon)
        self.pipeline = BatchPipeline(settings, encoder, policies, metrics, self.outbox,
                                      self.guard, self.gate, self._abandon, self._on_fatal,
                                      recent)
        self.health = Health(settings.kafka, encoder, policies, self.gate, metrics)
        self._batcher: Batcher[Job] = Batcher(settings.triton.batch_size,
                                              w.batch_linger_ms / 1000)
        self._executor = ThreadPoolExecutor(w.concurrent_batches, thread_name_prefix="batch")
        self._futures: set[Future[None]] = set()

    @property
    def stats(self) -> dict[str, int]:
        return self.outbox.stats

    def in_flight(self) -> int:
        return self.partitions.in_flight()

    def live(self) -> bool:
        return self.health.live()

    def readiness(self) -> dict[str, bool]:
        return self.health.readiness()

    def stop(self) -> None:
        """Ask the loop to stop polling, finish what it can, commit and leave the group."""
        self._stop.set()

    def _on_fatal(self, exc: BaseException) -> None:
        self._fatal = exc
        self._stop.set()

    def run(self, idle_exit_s: float | None = None) -> None:
        """Consume until ``stop()``, a fatal error, or ``idle_exit_s`` without any work."""
        parts = self.partitions
        parts.subscribe()
        last_work = last_commit = time.monotonic()
        try:
            while not self._stop.is_set():
                self.health.tick()
                now = time.monotonic()
                self.outbox.resend_due(now)
                self.guard.forget_settled()
                self.outbox.record_decided()
                parts.position_assigned()
                parts.flow_control()
                polled = parts.poll(self.settings.worker.max_in_flight - self.in_flight())
                now = time.monotonic()
                if polled is None:  # a failed poll is not idleness: nothing is known
                    last_work, polled = now, {}
                prior = self.guard.prior_attempts(polled)
                for tp, records in polled.items():
                    for record in records:
                        self._accept(tp, record, now, prior.get(
                            (record.topic, record.partition, record.offset), 0))
                if polled or self.in_flight() or not parts.any_assigned():
                    last_work = now  # idle means: owning partitions and nothing to do
                self._submit_ready(now)
                if now - last_commit >= self.settings.worker.commit_interval_s:
                    parts.commit()
                    parts.update_lag()
                    last_commit = now
                if idle_exit_s is not None and now - last_work >= idle_exit_s:
                    log.info("idle for %.1f s with nothing in flight: exiting", idle_exit_s)
                    break
        finally:
            self._shutdown()
        if self._fatal is not None:
            raise self._fatal

    def _accept(self, tp: TP, record: Record, now: float, prior_attempts: int = 0) -> None:
        epoch = self.partitions.track(tp, record.offset)
        if epoch is None:
            return
        limit = self.guard.limit
        if prior_attempts >= limit:  # decided nothing, but killed a process each time
            self.outbox.dead_letter(tp, epoch, record, "poison_record",
                                    poison_message(prior_attempts, limit))
            return
        try:
            upload = parse_upload(record.value, record.headers or [],
                                  self.settings.kafka.max_message_bytes)
            job = Job(tp, epoch, record, upload, started_at(upload, record.timestamp),
                      upload.image)
        except InputError as exc:
            self.outbox.dead_letter(tp, epoch, record, exc.reason, str(exc))
            return
        except Exception as exc:  # a bug meeting odd input: that record, not the worker
            self.outbox.internal_error(tp, epoch, record, "parse", exc)
            return
        if prior_attempts > 0:
            log.warning("processing alone: an earlier attempt did not finish topic=%s "
                        "partition=%d offset=%d upload_id=%s attempts=%d", record.topic,
                        record.partition, record.offset, upload.upload_id, prior_attempts)
            self.guard.isolate([job], "unfinished_attempt")
        else:
            self._batcher.add(job, now)

    def _owns(self, job: Job) -> bool:
        return self.partitions.owns(job.tp, job.epoch)

    def _submit_ready(self, now: float) -> None:
        """Hand batches to the batch threads. An upload to process alone waits until nothing
        else is in flight and runs by itself, so that if it kills a process (or Triton's
        stub) no other upload is counted as an attempt with it."""
        if self.guard.alone_running:
            return
        if self.guard.waiting_alone():
            if self._futures:
                return  # let the batches in flight finish first; start no new ones
            job = self.guard.next_alone(self._owns)
            if job is not None:
                self.guard.alone_running = True
                self._start([job], alone=True)
                return
        while (batch := self._batcher.take(now)) is not None:
            batch = [j for j in batch if self._owns(j)]
            if batch:
                self._start(batch, alone=False)

    def _start(self, jobs: list[Job], alone: bool) -> None:
        fut = self._executor.submit(self.pipeline.process, jobs, alone)
        self._futures.add(fut)
        fut.add_done_callback(self._futures.discard)

    def _shutdown(self) -> None:
        abandoned = len(self._batcher) + self.guard.waiting_alone()
        log.info("stopping: in_flight=%d (unsubmitted %d abandoned uncommitted)",
                 self.in_flight(), abandoned)
        deadline = time.monotonic() + self.settings.worker.drain_timeout_s
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
        self.pipeline.shutdown()
        self.outbox.flush(max(1.0, deadline - time.monotonic()))
        self.guard.forget_settled()
        self.outbox.record_decided()
        self.partitions.commit()
        self.partitions.close()
        log.info("stopped: decided=%d dead_lettered=%d in_flight_uncommitted=%d",
                 self.stats["decided"], self.stats["dead_lettered"], self.in_flight())
