"""The policy console's costs for ``moderation bench``: backtest and search over a full
recent window (100,000 uploads), and loading that window from Redis."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from moderation.config import Settings
from moderation.core.backtest import backtest, search
from moderation.core.policy import Policy, PolicySet
from moderation.core.recent import RecentEntry, RecentWindow
from moderation.devtools.bench_measures import median_seconds
from moderation.edges.recent_index import RedisRecentIndex


def _unit(rng: np.random.Generator, n: int, dim: int) -> Any:
    v = rng.normal(size=(n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def measure_backtest(dim: int, uploads: int = 100_000, policies: int = 50, prompts: int = 10,
                     repeats: int = 3) -> dict[str, Any]:
    """A draft that changes every policy's threshold and half of their prompts (the slow
    case: those are scored under both sets), against ``uploads`` float16 embeddings."""
    rng = np.random.default_rng(0)
    window = _unit(rng, uploads, dim).astype(np.float16).astype(np.float32)
    texts = [f"p{k}-{j}" for k in range(policies) for j in range(prompts + 1)]
    emb = dict(zip(texts, _unit(rng, len(texts), dim), strict=True))
    current = PolicySet(policies=tuple(
        Policy(name=f"p{k}", threshold=0.1, prompts=tuple(texts[k * (prompts + 1):][:prompts]))
        for k in range(policies)))
    draft = PolicySet(policies=tuple(
        p.model_copy(update={"threshold": 0.09, **({"prompts": p.prompts[1:]} if k % 2 else {})})
        for k, p in enumerate(current.policies)))
    backtest_s = median_seconds(lambda: backtest(window, current, emb, draft, emb), repeats)
    query = _unit(rng, 1, dim)[0]
    search_s = median_seconds(lambda: search(window, query, 24), 10)
    return {"uploads": uploads, "policies": policies, "prompts_per_policy": prompts,
            "backtest_s": round(backtest_s, 3), "search_ms": round(search_s * 1000, 2)}


def measure_window_load(settings: Settings, dim: int, uploads: int = 100_000
                        ) -> dict[str, Any]:
    """Fill a recent index in Redis with ``uploads`` entries (no thumbnails), then read it
    all as the console does when it starts."""
    redis = settings.redis.model_copy(update={"key_prefix": "bench"})
    index = RedisRecentIndex.from_settings(redis, settings.recent, timeout_s=30)
    rng = np.random.default_rng(1)
    scores = {f"policy_{k}": 0.25 for k in range(7)}
    now = time.time()
    t = time.perf_counter()
    for start in range(0, uploads, 500):
        vecs = _unit(rng, min(500, uploads - start), dim)
        index.add([(RecentEntry(f"u{start + i}", now, "allow", 1, "m", scores, (), v), None)
                   for i, v in enumerate(vecs)])
    write_s = time.perf_counter() - t
    t = time.perf_counter()
    window, last = RecentWindow(), None
    while batch := index.read_after(last, 5_000):
        window.extend(batch)
        last = batch[-1][0]
    window.embeddings32()
    load_s = time.perf_counter() - t
    memory = index.call("measure", lambda c: c.memory_usage(index.stream, samples=0))
    index.call("clean up", lambda c: c.delete(index.stream, index.thumbs))
    return {"uploads": len(window), "write_per_upload_us": round(write_s / uploads * 1e6, 1),
            "load_s": round(load_s, 2), "redis_mib": round((memory or 0) / 2**20, 1)}
