"""Backtest and search over recent uploads (pure numpy): what a draft policy set would decide
on the embeddings the workers already computed, compared with the current set, scored by
the same rule as the worker (core/scoring.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from moderation.core.policy import Policy, PolicySet
from moderation.core.scoring import compile_policies, not_vetoed, score

CHUNK = 8_192  # rows scored at once: bounds the [rows, prompts] similarity matrix


@dataclass(frozen=True)
class Columns:
    """One policy's raw scores over the window."""

    score: NDArray[Any]  # [N] best prompt cosine
    counter: NDArray[Any]  # [N] best counter-prompt cosine (-inf: none)

    def flagged(self, policy: Policy) -> NDArray[Any]:
        return (self.score >= policy.threshold) & \
            not_vetoed(self.score, self.counter, policy.counter_margin)


@dataclass(frozen=True)
class PolicyReport:
    policy: str
    change: str  # added | removed | changed | unchanged
    action_now: str | None
    action_draft: str | None
    threshold_now: float | None
    threshold_draft: float | None
    matches_now: int  # uploads the policy matches (whatever its action)
    matches_draft: int
    sweep: list[tuple[float, float]]  # (threshold, share of uploads matched), draft policy
    just_above: list[tuple[int, float]]  # (row, score) matched, nearest the threshold
    just_below: list[tuple[int, float]]  # (row, score) not matched, nearest the threshold


@dataclass(frozen=True)
class Backtest:
    uploads: int
    flagged_now: int  # uploads the current set flags
    flagged_draft: int
    newly_flagged: list[int]  # rows, highest draft score first (at most ``changes``)
    no_longer_flagged: list[int]
    newly_flagged_total: int
    no_longer_flagged_total: int
    review_now: int  # uploads a review policy would send to the review topic
    review_draft: int
    policies: list[PolicyReport]

    def flag_rate(self, n: int) -> float:
        return n / self.uploads if self.uploads else 0.0


def policy_columns(embeddings: NDArray[Any], policies: PolicySet,
                   prompt_emb: Mapping[str, NDArray[Any]]) -> dict[str, Columns]:
    """Every policy's scores over ``embeddings`` [N, D], in chunks."""
    matrix = compile_policies(policies, prompt_emb)
    n, k = len(embeddings), len(policies.policies)
    best = np.empty((n, k), np.float32)
    counter = np.empty((n, k), np.float32)
    for start in range(0, n, CHUNK):
        s = score(np.asarray(embeddings[start:start + CHUNK], np.float32), matrix)
        best[start:start + CHUNK] = s.score
        counter[start:start + CHUNK] = s.counter
    return {p.name: Columns(best[:, i], counter[:, i]) for i, p in enumerate(policies.policies)}


def _same_scores(a: Policy, b: Policy) -> bool:
    return a.prompts == b.prompts and a.counter_prompts == b.counter_prompts


def sweep(cols: Columns, policy: Policy, step: float = 0.01, span: float = 0.15
          ) -> list[tuple[float, float]]:
    """Share of uploads the policy matches at thresholds around its own."""
    n = len(cols.score)
    # the counter-prompt veto does not depend on the threshold: sort the eligible scores once
    eligible = np.sort(cols.score[not_vetoed(cols.score, cols.counter, policy.counter_margin)])
    lo, hi = max(-1.0, policy.threshold - span), min(1.0, policy.threshold + span)
    ts = np.round(np.arange(lo, hi + step / 2, step), 4)
    matched = len(eligible) - np.searchsorted(eligible, ts.astype(np.float32), side="left")
    return [(float(t), float(m) / n if n else 0.0) for t, m in zip(ts, matched, strict=True)]


def _nearest(cols: Columns, policy: Policy, k: int) -> tuple[list[tuple[int, float]],
                                                              list[tuple[int, float]]]:
    flagged = cols.flagged(policy)
    above = np.flatnonzero(flagged)
    below = np.flatnonzero(~flagged & (cols.score < policy.threshold))
    above = above[np.argsort(cols.score[above], kind="stable")[:k]]
    below = below[np.argsort(-cols.score[below], kind="stable")[:k]]
    return ([(int(i), float(cols.score[i])) for i in above],
            [(int(i), float(cols.score[i])) for i in below])


def _decisions(policies: PolicySet, cols: Mapping[str, Columns], n: int
               ) -> tuple[NDArray[Any], NDArray[Any], NDArray[Any]]:
    """Per upload: flagged by the set, sent to review, and the best flag-policy score
    (for ordering)."""
    flag, review = np.zeros(n, bool), np.zeros(n, bool)
    top = np.full(n, -np.inf, np.float32)
    for p in policies.policies:
        matched = cols[p.name].flagged(p)
        if p.action == "flag":
            flag |= matched
            top = np.maximum(top, np.where(matched, cols[p.name].score, -np.inf))
        elif p.action == "review":
            review |= matched
    return flag, review, top


def backtest(embeddings: NDArray[Any], current: PolicySet,
             current_emb: Mapping[str, NDArray[Any]], draft: PolicySet,
             draft_emb: Mapping[str, NDArray[Any]], examples: int = 6, changes: int = 60
             ) -> Backtest:
    """The draft set against the current one on the same uploads. Policies whose prompts
    are unchanged are scored once."""
    n = len(embeddings)
    now_by_name = {p.name: p for p in current.policies}
    draft_by_name = {p.name: p for p in draft.policies}
    draft_cols = policy_columns(embeddings, draft, draft_emb)
    rescore = [p for p in current.policies
               if p.name not in draft_by_name or not _same_scores(p, draft_by_name[p.name])]
    now_cols = {p.name: draft_cols[p.name] for p in current.policies
                if p.name not in {r.name for r in rescore}}
    if rescore:
        now_cols.update(policy_columns(embeddings, PolicySet(policies=tuple(rescore)),
                                       current_emb))
    flag_now, review_now, top_now = _decisions(current, now_cols, n)
    flag_draft, review_draft, top_draft = _decisions(draft, draft_cols, n)
    newly = np.flatnonzero(flag_draft & ~flag_now)
    gone = np.flatnonzero(flag_now & ~flag_draft)
    totals = len(newly), len(gone)
    newly = newly[np.argsort(-top_draft[newly], kind="stable")[:changes]]
    gone = gone[np.argsort(-top_now[gone], kind="stable")[:changes]]

    reports = []
    for p in draft.policies:
        old = now_by_name.get(p.name)
        cols = draft_cols[p.name]
        above, below = _nearest(cols, p, examples)
        reports.append(PolicyReport(
            p.name, "added" if old is None else ("unchanged" if old == p else "changed"),
            old.action if old else None, p.action, old.threshold if old else None,
            p.threshold, int(now_cols[p.name].flagged(old).sum()) if old else 0,
            int(cols.flagged(p).sum()), sweep(cols, p), above, below))
    for old in current.policies:
        if old.name not in draft_by_name:
            reports.append(PolicyReport(old.name, "removed", old.action, None, old.threshold,
                                        None, int(now_cols[old.name].flagged(old).sum()), 0,
                                        [], [], []))
    return Backtest(n, int(flag_now.sum()), int(flag_draft.sum()),
                    [int(i) for i in newly], [int(i) for i in gone], *totals,
                    int(review_now.sum()), int(review_draft.sum()), reports)


def search(embeddings: NDArray[Any], query: NDArray[Any], k: int) -> list[tuple[int, float]]:
    """The ``k`` rows most similar to ``query`` (cosine; rows and query L2-normalised),
    best first."""
    if len(embeddings) == 0:
        return []
    sims = np.asarray(embeddings, np.float32) @ np.asarray(query, np.float32)
    k = min(k, len(sims))
    top = np.argpartition(-sims, k - 1)[:k]
    top = top[np.argsort(-sims[top], kind="stable")]
    return [(int(i), float(sims[i])) for i in top]
