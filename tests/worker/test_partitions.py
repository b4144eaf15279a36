"""Partitions alone: what a member may track, acknowledge and commit around rebalances."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry

from moderation.edges.metrics import Metrics
from moderation.worker.partitions import Partitions
from tests.fakes import TP, FakeConsumer, FakeRecord
from tests.worker.test_worker import settings

P0, P1 = TP("uploads", 0), TP("uploads", 1)


def member(committed: dict[TP, int] | None = None) -> tuple[Partitions, FakeConsumer]:
    consumer = FakeConsumer([FakeRecord("uploads", p, o, b"x") for p in (0, 1) for o in range(6)])
    consumer.commits.append(dict(committed or {}))
    parts = Partitions(settings(max_in_flight=4), consumer, Metrics(CollectorRegistry()),
                       threading.Event())
    parts.subscribe()  # the fake assigns both partitions at once
    return parts, consumer


def tracking(*offsets: int) -> tuple[Partitions, FakeConsumer, int]:
    """A member positioned on both partitions, tracking these offsets of partition 0."""
    parts, consumer = member()
    parts.position_assigned()
    epochs = {parts.track(P0, offset) for offset in offsets}
    assert len(epochs) == 1
    epoch = epochs.pop()
    assert epoch is not None
    return parts, consumer, epoch


def test_records_wait_until_their_partition_is_at_the_committed_offset() -> None:
    parts, consumer = member({P0: 3})
    assert parts.track(P0, 0) is None  # assigned, not yet positioned: could be a stale fetch
    parts.position_assigned()
    assert [r.offset for r in consumer.queues[P0]] == [3, 4, 5]
    assert [r.offset for r in consumer.queues[P1]] == list(range(6))  # nothing committed
    assert parts.track(P0, 3) == 0


def test_only_a_prefix_of_acknowledged_offsets_is_committed() -> None:
    parts, consumer, epoch = tracking(0, 1)
    parts.ack(P0, epoch, 1)
    parts.commit()
    assert consumer.last_committed().get(P0) is None  # offset 0 is still undecided
    parts.ack(P0, epoch, 0)
    parts.commit()
    assert consumer.last_committed()[P0] == 2
    assert parts.in_flight() == 0


def test_a_revoked_partition_ignores_acks_from_its_old_epoch() -> None:
    parts, consumer, old = tracking(0, 1)
    parts.ack(P0, old, 0)
    parts.revoke([P0], commit=True)
    assert consumer.async_commits == {P0: 1}  # what was acknowledged when it was revoked
    assert not parts.owns(P0, old)
    assert parts.track(P0, 1) is None  # no longer owned
    parts.assign([P0])  # and back to this member: offset 1 is redelivered
    parts.position_assigned()
    new = parts.track(P0, 1)
    assert new is not None and new != old
    parts.ack(P0, old, 1)  # the old attempt settles late: the new one has to decide it again
    parts.commit()
    assert consumer.last_committed()[P0] == 1  # the late ack did not move it
    parts.ack(P0, new, 1)
    parts.commit()
    assert consumer.last_committed()[P0] == 2


def test_consumption_pauses_at_max_in_flight_and_resumes_at_half() -> None:
    parts, consumer, epoch = tracking(0, 1, 2, 3)
    parts.flow_control()
    assert consumer.paused() == {P0, P1}
    parts.ack(P0, epoch, 0)
    parts.flow_control()
    assert consumer.paused() == {P0, P1}  # 3 in flight: not below half of 4 yet
    parts.ack(P0, epoch, 1)
    parts.ack(P0, epoch, 2)
    parts.flow_control()
    assert consumer.paused() == set()
