"""Batching across messages and turning embeddings into decisions (pure)."""

from datetime import UTC, datetime, timedelta

import numpy as np

from moderation.contract.events import Upload
from moderation.core.batching import Batcher, decide, started_at
from moderation.core.scoring import compile_policies
from tests.fakes import EMBEDDINGS, policy_set, unit


def test_full_batches_go_at_once_partial_ones_after_the_linger() -> None:
    b: Batcher[int] = Batcher(size=3, linger_s=0.5)
    for i in range(4):
        b.add(i, now=10.0)
    assert b.take(now=10.0) == [0, 1, 2]
    assert b.take(now=10.1) is None  # one left, has not lingered yet
    assert b.take(now=10.6) == [3]
    assert b.take(now=11.0) is None and len(b) == 0


def test_linger_counts_from_the_oldest_waiting_item() -> None:
    b: Batcher[str] = Batcher(size=10, linger_s=1.0)
    b.add("a", now=0.0)
    b.add("b", now=0.9)
    assert b.take(now=0.95) is None
    assert b.take(now=1.0) == ["a", "b"]


def test_started_at_prefers_created_at_then_kafka_timestamp() -> None:
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with_created = Upload(upload_id="a", image=b"x", image_url=None, created_at=created)
    without = Upload(upload_id="b", image=b"x", image_url=None, created_at=None)
    assert started_at(with_created, 1_000) == created
    assert started_at(without, 1_700_000_000_000) == datetime.fromtimestamp(1_700_000_000, UTC)
    assert abs(started_at(without, -1) - datetime.now(UTC)) < timedelta(seconds=5)


def test_decide_scores_the_batch_and_stamps_version_model_latency() -> None:
    policies = policy_set(threshold=0.5)
    matrix = compile_policies(policies, {t: EMBEDDINGS[t] for t in policies.texts()})
    now = datetime(2026, 1, 1, 0, 0, 1, tzinfo=UTC)
    start = now - timedelta(milliseconds=250)
    ups = [(Upload(upload_id=u, image=b"x", image_url=None, created_at=None), start)
           for u in ("red", "blue")]
    out = decide(ups, np.stack([unit(0), unit(1)]), matrix, 7, "fake@1", now=now)
    assert [d.decision for d in out] == ["flag", "allow"]
    assert out[0].flagged_policies == ["red_things"] and out[1].flagged_policies == []
    assert {d.policy_version for d in out} == {7} and {d.model for d in out} == {"fake@1"}
    assert out[0].latency_ms == 250.0
    assert out[0].verdicts[0].score == 1.0 and out[1].verdicts[0].score == 0.0
    assert decide([], np.zeros((0, 8)), matrix, 7, "fake@1") == []
