"""Embeddings x policy matrix -> verdicts. Pure, vectorised numpy; no I/O.

The rule, per image and policy (all vectors L2-normalised, so dot product = cosine):

    score   = max over the policy's prompts of cos(image, prompt)
    counter = max over its counter-prompts of cos(image, counter_prompt)  (-inf if none)
    flagged = score >= threshold and counter < score + counter_margin

An image's decision is ``flag`` when any policy flags it, else ``allow``. The counter-prompt
term vetoes a flag when the image looks clearly (by more than the policy's
``counter_margin``, default 0.05) more like a named benign look-alike (a fork and knife, a
soda cup) than like the policy's content.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from moderation.contract.events import Verdict
from moderation.core.policy import PolicySet


@dataclass(frozen=True)
class PolicyMatrix:
    """A policy set compiled against one embedding model."""

    names: tuple[str, ...]
    thresholds: NDArray[Any]  # [K]
    margins: NDArray[Any]  # [K] counter_margin
    prompts: tuple[tuple[str, ...], ...]  # per policy
    prompt_emb: NDArray[Any]  # [P, D], grouped by policy
    prompt_index: NDArray[Any]  # [K, maxP] rows into prompt_emb, -1 = padding
    counter_emb: NDArray[Any]  # [C, D]
    counter_index: NDArray[Any]  # [K, maxC] rows into counter_emb, -1 = padding
    actions: tuple[str, ...]  # per policy: flag, shadow or review


def _index(groups: Sequence[int]) -> NDArray[Any]:
    width = max([1, *groups])
    idx = np.full((len(groups), width), -1, np.int64)
    start = 0
    for k, n in enumerate(groups):
        idx[k, :n] = np.arange(start, start + n)
        start += n
    return idx


def compile_policies(policies: PolicySet, embeddings: Mapping[str, NDArray[Any]]) -> PolicyMatrix:
    """Gather each prompt's embedding (``embeddings`` maps text -> [D]) into matrices."""
    ps = policies.policies
    prompt_texts = [t for p in ps for t in p.prompts]
    counter_texts = [t for p in ps for t in p.counter_prompts]
    dim = len(next(iter(embeddings.values())))

    def stack(texts: list[str]) -> NDArray[Any]:
        if not texts:
            return np.zeros((0, dim), np.float32)
        return np.stack([np.asarray(embeddings[t], np.float32) for t in texts])

    return PolicyMatrix(
        names=tuple(p.name for p in ps),
        thresholds=np.array([p.threshold for p in ps], np.float32),
        margins=np.array([p.counter_margin for p in ps], np.float32),
        prompts=tuple(p.prompts for p in ps),
        prompt_emb=stack(prompt_texts),
        prompt_index=_index([len(p.prompts) for p in ps]),
        counter_emb=stack(counter_texts),
        counter_index=_index([len(p.counter_prompts) for p in ps]),
        actions=tuple(p.action for p in ps),
    )


@dataclass(frozen=True)
class Scores:
    """Per image (rows) and policy (columns)."""

    score: NDArray[Any]  # [B, K] best prompt cosine
    top_prompt: NDArray[Any]  # [B, K] index into the policy's prompts
    counter: NDArray[Any]  # [B, K] best counter-prompt cosine, -inf when none
    flagged: NDArray[Any]  # [B, K] bool


def _grouped_max(sims: NDArray[Any], index: NDArray[Any]) -> tuple[NDArray[Any], NDArray[Any]]:
    """Max and argmax of ``sims[:, index[k]]`` per group k, ignoring -1 padding."""
    b = sims.shape[0]
    k, w = index.shape
    if sims.shape[1] == 0:
        return np.full((b, k), -np.inf, np.float32), np.zeros((b, k), np.int64)
    if sims.shape[1] == k * w and (index >= 0).all():
        # every group has w members, laid out in order: a free reshape, no gather
        gathered = sims.reshape(b, k, w)
    else:
        gathered = sims[:, np.maximum(index, 0)]  # [B, K, W]
        gathered = np.where(index[None, :, :] >= 0, gathered, -np.inf)
    arg = gathered.argmax(axis=2)
    return np.take_along_axis(gathered, arg[..., None], axis=2)[..., 0], arg


def not_vetoed(score: NDArray[Any], counter: NDArray[Any], margin: Any) -> NDArray[np.bool_]:
    """Where no counter-prompt vetoes: the best counter-prompt is not ``margin`` or more
    above the policy's score. The one statement of the veto, for the worker, the backtest
    and calibration alike."""
    return np.asarray(counter < score + margin)


def score(embeddings: NDArray[Any], matrix: PolicyMatrix) -> Scores:
    """Score a batch of image embeddings ``[B, D]`` against every policy at once."""
    emb = np.asarray(embeddings, np.float32)
    best, arg = _grouped_max(emb @ matrix.prompt_emb.T, matrix.prompt_index)
    counter, _ = _grouped_max(emb @ matrix.counter_emb.T, matrix.counter_index)
    flagged = (best >= matrix.thresholds[None, :]) & not_vetoed(best, counter,
                                                                 matrix.margins[None, :])
    return Scores(best, arg, counter, flagged)


def verdicts(scores: Scores, matrix: PolicyMatrix, row: int) -> list[Verdict]:
    # whole rows through tolist(): per-element numpy scalar conversions dominate otherwise
    score_row = np.round(scores.score[row].astype(np.float64), 4).tolist()
    flagged_row = scores.flagged[row].tolist()
    top_row = scores.top_prompt[row].tolist()
    thresholds = matrix.thresholds.astype(np.float64).tolist()
    return [Verdict(name, sc, th, fl, prompts[top], action)
            for name, sc, th, fl, top, prompts, action in zip(
                matrix.names, score_row, thresholds, flagged_row, top_row, matrix.prompts,
                matrix.actions, strict=True)]
