"""PoisonGuard alone: attempt counts, the limit, the queue of records processed alone."""

from __future__ import annotations

from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from moderation.contract.events import Upload
from moderation.edges.metrics import Metrics
from moderation.worker.guard import PoisonGuard
from moderation.worker.jobs import Job
from tests.fakes import TP, FakeAttempts, FakeRecord


def job(offset: int, epoch: int = 0) -> Job:
    record = FakeRecord("uploads", 0, offset, b"x")
    upload = Upload(upload_id=f"u{offset}", image=b"x", image_url=None, created_at=None)
    return Job(TP("uploads", 0), epoch, record, upload, datetime.now(UTC), b"x")


def test_a_job_past_the_limit_is_rejected_and_the_rest_go_on() -> None:
    counter = FakeAttempts(prior={("uploads", 0, 1): 3})
    guard = PoisonGuard(counter, limit=3, metrics=Metrics(CollectorRegistry()))
    rejected: list[tuple[int, str]] = []
    left = guard.start([job(0), job(1)], lambda j, msg: rejected.append((j.record.offset, msg)))
    assert [j.record.offset for j in left] == [0]
    assert rejected[0][0] == 1 and "started 3 times" in rejected[0][1]
    assert counter.n[("uploads", 0, 0)] == 1


def test_settled_records_are_forgotten_by_the_main_loop() -> None:
    counter = FakeAttempts()
    guard = PoisonGuard(counter, limit=3, metrics=Metrics(CollectorRegistry()))
    guard.start([job(0)], lambda j, m: None)
    guard.settled(("uploads", 0, 0))
    assert counter.n == {("uploads", 0, 0): 1}  # not from the producer thread
    guard.forget_settled()
    assert counter.n == {} and counter.forgotten == [("uploads", 0, 0)]


def test_with_redis_down_the_guard_steps_aside() -> None:
    metrics = Metrics(CollectorRegistry())
    guard = PoisonGuard(FakeAttempts(down=True), limit=3, metrics=metrics)
    assert guard.prior_attempts({TP("uploads", 0): [FakeRecord("uploads", 0, 0, b"x")]}) == {}
    assert len(guard.start([job(0)], lambda j, m: None)) == 1
    assert metrics.attempt_errors._value.get() == 2


def test_jobs_processed_alone_come_out_in_order_skipping_revoked_ones() -> None:
    metrics = Metrics(CollectorRegistry())
    guard = PoisonGuard(None, limit=3, metrics=metrics)
    guard.isolate([job(0, epoch=0), job(1, epoch=1), job(2, epoch=1)], "failed_batch")
    owned = lambda j: j.epoch == 1  # noqa: E731  partition 0 was revoked and came back
    assert guard.waiting_alone() == 3
    first = guard.next_alone(owned)
    assert first is not None and first.record.offset == 1
    second = guard.next_alone(owned)
    assert second is not None and second.record.offset == 2
    assert guard.next_alone(owned) is None
    assert metrics.isolated.labels("failed_batch")._value.get() == 3
