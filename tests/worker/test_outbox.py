"""The outbox's settlement rule: a record settles when all of its sends are acknowledged."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from prometheus_client import CollectorRegistry

from moderation.config import Settings
from moderation.contract.events import Decision, Upload, Verdict
from moderation.edges.metrics import Metrics
from moderation.worker.jobs import Job
from moderation.worker.outbox import Outbox
from tests.fakes import TP, FakeLedger, FakeRecord

Ack = Callable[[Exception | None], None]


class HeldPublisher:
    """Keeps every acknowledgement until the test releases it."""

    def __init__(self) -> None:
        self.held: dict[str, list[Ack]] = {}

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes]], done: Ack) -> None:
        self.held.setdefault(topic, []).append(done)

    def release(self, topic: str, exc: Exception | None = None) -> None:
        self.held.pop(topic).pop()(exc)


class Recorder:
    """Stands in for Partitions and PoisonGuard: records what was settled."""

    def __init__(self) -> None:
        self.acked: list[int] = []

    def ack(self, tp: object, epoch: int, offset: int) -> None:
        self.acked.append(offset)

    def owns(self, tp: object, epoch: int) -> bool:
        return True

    def settled(self, coordinates: object) -> None:
        pass


def review_job() -> tuple[Job, Decision]:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    upload = Upload(upload_id="u-9", image=b"x", image_url=None, created_at=None)
    job = Job(TP("uploads", 0), 1, FakeRecord("uploads", 0, 41, b"x"), upload, started, b"x")
    decision = Decision.build("u-9", [Verdict("queue_me", 0.7, 0.5, True, "a", "review")], 3,
                              "m", started)
    return job, decision


def test_a_reviewed_record_settles_only_when_decision_and_review_are_both_acknowledged() -> None:
    pub, rec, ledger = HeldPublisher(), Recorder(), FakeLedger()
    metrics = Metrics(CollectorRegistry())
    outbox = Outbox(Settings(), pub, rec, rec, metrics, ledger)  # type: ignore[arg-type]
    job, decision = review_job()
    outbox.decision(job, decision, decision.to_bytes())
    assert set(pub.held) == {"moderation.decisions", "moderation.review"}
    pub.release("moderation.decisions")
    outbox.record_decided()
    assert rec.acked == [] and ledger.keys == set()  # the review is still out
    pub.release("moderation.review", RuntimeError("broker said no"))
    assert rec.acked == []
    outbox.resend_due(float("inf"))  # the failed review alone goes again
    assert set(pub.held) == {"moderation.review"}
    pub.release("moderation.review")
    outbox.record_decided()
    assert rec.acked == [41] and len(ledger.keys) == 1
    assert metrics.reviews.labels("queue_me")._value.get() == 1
    assert metrics.decisions.labels("allow")._value.get() == 1
