"""Backtest and search: the same decisions as the worker's scoring, changes, sweeps."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np

from moderation.contract.events import Upload
from moderation.core.backtest import backtest, policy_columns, search, sweep
from moderation.core.batching import decide
from moderation.core.policy import Policy, PolicySet
from moderation.core.scoring import compile_policies

DIM = 16


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def prompts(rng: np.random.Generator, names: list[str]) -> dict[str, np.ndarray]:
    return dict(zip(names, unit(rng, len(names)), strict=True))


def sets() -> tuple[PolicySet, PolicySet, dict[str, np.ndarray]]:
    rng = np.random.default_rng(7)
    emb = prompts(rng, ["a", "b", "c", "d", "e", "x"])
    current = PolicySet(policies=(
        Policy(name="alpha", threshold=0.3, prompts=("a", "b"), counter_prompts=("x",)),
        Policy(name="gamma", threshold=0.35, prompts=("c",)),
        Policy(name="old", threshold=0.3, prompts=("e",)),
    ))
    draft = PolicySet(policies=(
        Policy(name="alpha", threshold=0.2, prompts=("a", "b"), counter_prompts=("x",)),
        Policy(name="gamma", threshold=0.35, prompts=("c", "d")),
        Policy(name="watch", threshold=0.3, prompts=("d",), action="review"),
    ))
    return current, draft, emb


def worker_flags(images: np.ndarray, policies: PolicySet, emb: dict[str, np.ndarray]
                 ) -> np.ndarray:
    started = datetime(2026, 1, 1, tzinfo=UTC)
    uploads = [(Upload(upload_id=f"u{i}", image=b"", image_url=None, created_at=None), started)
               for i in range(len(images))]
    out = decide(uploads, images, compile_policies(policies, emb), 1, "m")
    return np.array([d.decision == "flag" for d in out])


def test_predicted_changes_are_what_the_worker_would_decide() -> None:
    current, draft, emb = sets()
    images = unit(np.random.default_rng(1), 20_000)
    report = backtest(images, current, emb, draft, emb, changes=100_000)
    now, then = worker_flags(images, current, emb), worker_flags(images, draft, emb)
    assert report.uploads == 20_000
    assert report.flagged_now == now.sum() and report.flagged_draft == then.sum()
    assert set(report.newly_flagged) == set(np.flatnonzero(then & ~now).tolist())
    assert set(report.no_longer_flagged) == set(np.flatnonzero(now & ~then).tolist())
    assert report.newly_flagged and report.no_longer_flagged  # the test exercises both
    by_name = {r.policy: r for r in report.policies}
    assert {n: r.change for n, r in by_name.items()} == {
        "alpha": "changed", "gamma": "changed", "watch": "added", "old": "removed"}
    assert by_name["alpha"].matches_draft > by_name["alpha"].matches_now  # threshold lowered
    assert report.review_now == 0 and report.review_draft == by_name["watch"].matches_draft > 0


def test_the_sweep_and_the_nearest_examples_agree_with_the_threshold() -> None:
    current, draft, emb = sets()
    images = unit(np.random.default_rng(2), 5_000)
    alpha = draft.policies[0]
    cols = policy_columns(images, draft, emb)["alpha"]
    points = dict(sweep(cols, alpha))
    assert points[0.2] == cols.flagged(alpha).mean()
    rates = [r for _, r in sweep(cols, alpha)]
    assert rates == sorted(rates, reverse=True)  # a higher threshold never matches more
    report = backtest(images, current, emb, draft, emb, examples=4)
    r = next(r for r in report.policies if r.policy == "alpha")
    assert len(r.just_above) == 4 and all(s >= 0.2 for _, s in r.just_above)
    assert all(s < 0.2 for _, s in r.just_below)
    assert r.just_above[0][1] == cols.score[cols.flagged(alpha)].min()


def test_search_returns_the_most_similar_rows_best_first() -> None:
    rng = np.random.default_rng(3)
    images = unit(rng, 1_000).astype(np.float16)
    hits = search(images, images[42].astype(np.float32), 5)
    assert hits[0][0] == 42 and abs(hits[0][1] - 1.0) < 2e-3
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    assert search(images[:0], images[0], 5) == []
