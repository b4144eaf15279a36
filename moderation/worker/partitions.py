"""The partitions this group member owns: poll, assignment and positions, offsets to
commit, lag, and flow control. The Kafka consumer is used from the main thread only,
except the rebalance listener (kafka IO thread) and acknowledgements (producer thread),
which go through this class's lock.

Each partition has an ownership epoch, bumped when it is revoked: work polled under an
older epoch belongs to the partition's next owner and must not move this member's offsets.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import Any

from moderation.config import Settings
from moderation.core.offsets import OffsetTracker
from moderation.edges.kafka_io import Record
from moderation.edges.metrics import Metrics
from moderation.worker.jobs import TP, partition_names

log = logging.getLogger(__name__)


class Partitions:
    def __init__(self, settings: Settings, consumer: Any, metrics: Metrics,
                 abandon: threading.Event) -> None:
        self.settings = settings
        self.consumer = consumer  # kafka-python KafkaConsumer (untyped)
        self.metrics = metrics
        self._abandon = abandon  # set at shutdown: stop waiting
        self._lock = threading.Lock()
        self._tracker = OffsetTracker()
        self._epochs: dict[TP, int] = {}
        # partitions this member owns now; the rebalance listener (kafka IO thread) keeps it
        self._owned: set[TP] = set()
        # owned partitions not yet moved to their committed offset
        self._unpositioned: set[TP] = set()
        self._paused = False
        self._poll_failing = False

    def subscribe(self) -> None:
        from kafka import ConsumerRebalanceListener

        partitions = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Iterable[TP]) -> None:
                partitions.revoke(revoked, commit=True)

            def on_partitions_assigned(self, assigned: Iterable[TP]) -> None:
                partitions.assign(assigned)

            def on_partitions_lost(self, lost: Iterable[TP]) -> None:
                partitions.revoke(lost, commit=False)

        topic = self.settings.kafka.input_topic
        self.consumer.subscribe([topic], listener=Listener())
        log.info("consuming topic=%s group=%s", topic, self.settings.kafka.group_id)

    def poll(self, room: int) -> Mapping[TP, list[Record]] | None:
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

    # --- offsets: what is in flight, what may be committed ------------------------------

    def track(self, tp: TP, offset: int) -> int | None:
        """Start tracking a polled record; its partition's epoch, or None when the record
        must be left alone.

        None: fetched around a rebalance that ran while poll() was returning. Revoked: the
        new owner reads it again from the committed offset, and tracking it would let this
        member commit past what that owner has decided. Assigned again but not yet
        positioned: it may come from the old fetch position."""
        with self._lock:
            if tp not in self._owned or tp in self._unpositioned:
                return None
            self._tracker.track(tp, offset)  # a redelivery is decided again, never skipped
            return self._epochs.setdefault(tp, 0)

    def owns(self, tp: TP, epoch: int) -> bool:
        with self._lock:  # a revoked partition's work belongs to its new owner now
            return self._epochs.get(tp) == epoch

    def ack(self, tp: TP, epoch: int, offset: int) -> None:
        """The record has its outcome acknowledged by the broker (producer thread)."""
        with self._lock:
            if self._epochs.get(tp) == epoch:  # else revoked: the new owner redoes it
                self._tracker.ack(tp, offset)

    def in_flight(self) -> int:
        with self._lock:
            return self._tracker.in_flight()

    def any_assigned(self) -> bool:
        return bool(self.consumer.assignment())

    def commit(self) -> None:
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

    # --- lag and flow control -------------------------------------------------------------

    def update_lag(self) -> None:
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

    def flow_control(self) -> None:
        """Pause every partition at ``max_in_flight`` uncommitted records; resume at half."""
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

    # --- rebalances -----------------------------------------------------------------------

    def assign(self, tps: Iterable[TP]) -> None:
        """Rebalance listener (kafka IO thread)."""
        tps = list(tps)
        with self._lock:
            self._owned.update(tps)
            if not getattr(self.consumer, "positions_on_assign", False):
                self._unpositioned.update(tps)
        log.info("partitions assigned: %s", partition_names(tps))

    def position_assigned(self) -> None:
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

    def revoke(self, tps: Iterable[TP], commit: bool) -> None:
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
            log.info("partitions revoked: %s; committing %s", partition_names(tps), acked)
        else:  # evicted from the group: a commit would be refused
            log.warning("partitions lost: %s; acknowledged but uncommitted %s",
                        partition_names(tps), acked)
        if commit and offsets:
            try:
                self.consumer.commit_async(offsets)
            except Exception as exc:
                log.warning("commit on revocation failed: %s", exc)

    def close(self) -> None:
        """Leave the group (partitions move now), without committing anything more."""
        try:
            self.consumer.close(autocommit=False)
        except Exception as exc:
            log.warning("consumer close failed: %s", exc)
