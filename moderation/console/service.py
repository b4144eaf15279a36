"""What the policy console does, behind its HTTP API, its page and the CLI: read the current
set and its history, validate, diff and backtest drafts on recent uploads, search them, and
apply or roll back (audited with the caller's name).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict
from typing import Any

import numpy as np

from moderation.config import Settings
from moderation.core.backtest import Backtest, backtest, search
from moderation.core.policy import PolicySet
from moderation.core.policy_diff import diff_sets
from moderation.core.recent import RecentEntry, RecentWindow
from moderation.edges.encoders import Encoder
from moderation.edges.policy_store import (
    RedisPolicyStore,
    StoredPolicySet,
    apply_policies,
    embed_prompts,
)
from moderation.edges.recent_index import RedisRecentIndex

log = logging.getLogger(__name__)


class Console:
    def __init__(self, store: RedisPolicyStore, encoder: Encoder, index: RedisRecentIndex,
                 refresh_s: float = 2.0) -> None:
        self.store, self.encoder, self.index = store, encoder, index
        self.refresh_s = refresh_s
        self.window = RecentWindow()
        self._last_id: str | None = None
        self._refreshed = -float("inf")
        # FastAPI runs requests on a thread pool: a refresh must not move rows under a
        # backtest or search reading them (re-entrant: those refresh first)
        self._lock = threading.RLock()

    @classmethod
    def from_settings(cls, settings: Settings, encoder: Encoder) -> Console:
        return cls(RedisPolicyStore.from_settings(settings.redis), encoder,
                   RedisRecentIndex.from_settings(settings.redis, settings.recent, timeout_s=10),
                   settings.console.refresh_s)

    # --- the recent window ---------------------------------------------------------------

    def refresh(self, force: bool = False) -> RecentWindow:
        """Read what the workers added since the last call (at most every refresh_s)."""
        with self._lock:
            if not force and time.monotonic() - self._refreshed < self.refresh_s:
                return self.window
            while batch := self.index.read_after(self._last_id, 5_000):
                self.window.extend(batch)
                self._last_id = batch[-1][0]
            self.window.drop_before(self.index.oldest_id(),
                                    time.time() - self.index.max_age_s)
            self._refreshed = time.monotonic()
            return self.window

    def recent(self, limit: int = 50) -> list[dict[str, Any]]:
        with self._lock:
            w = self.refresh()
            return [entry_json(e) for e in reversed(w.entries[-limit:])]

    def thumbnail(self, upload_id: str) -> bytes | None:
        with self._lock:
            w = self.refresh()
            row = w.row(upload_id)
            stream_id = None if row is None else w.stream_ids[row]
        return None if stream_id is None else self.index.thumbnail(stream_id)

    # --- policies ------------------------------------------------------------------------

    def current(self) -> StoredPolicySet:
        return self.store.load()

    def diff(self, draft: PolicySet) -> list[dict[str, Any]]:
        return [asdict(c) for c in diff_sets(self.current().policies, draft)]

    def history(self) -> list[dict[str, Any]]:
        entries = [asdict(e) for e in self.store.history()]
        current = self.store.current_version()
        for e in entries:
            e["current"] = e["version"] == current
        return entries[::-1]

    def version(self, version: int) -> StoredPolicySet:
        return self.store.load(version)

    def apply(self, draft: PolicySet, author: str, message: str) -> int:
        version = apply_policies(draft, self.encoder, self.store, author, message)
        log.info("audit action=apply version=%d author=%s policies=%d message=%r", version,
                 author, len(draft.policies), message)
        return version

    def rollback(self, version: int, author: str, message: str) -> int:
        new = self.store.rollback(version, author, message)
        log.info("audit action=rollback version=%d restores=%d author=%s message=%r", new,
                 version, author, message)
        return new

    # --- backtest and search ----------------------------------------------------------------

    def backtest(self, draft: PolicySet, last: int | None = None,
                 since_s: float | None = None, current: StoredPolicySet | None = None
                 ) -> dict[str, Any]:
        current = current or self.current()
        _, draft_emb = embed_prompts(draft.texts(), self.encoder, self.store)
        with self._lock:
            w = self.refresh()
            rows = _rows(w, current.model, last, since_s)
            started = time.perf_counter()
            report = backtest(w.embeddings32()[rows], current.policies, current.embeddings,
                              draft, draft_emb)
            return report_json(report, [w.entries[i] for i in rows], current.version,
                               time.perf_counter() - started)

    def search_text(self, text: str, k: int = 24) -> list[dict[str, Any]]:
        _, emb = embed_prompts([text], self.encoder, self.store)
        return self._search(emb[text], k)

    def search_similar(self, upload_id: str, k: int = 24) -> list[dict[str, Any]] | None:
        with self._lock:
            w = self.refresh()
            row = w.row(upload_id)
            if row is None:
                return None
            return self._search(w.embeddings32()[row], k)

    def _search(self, query: Any, k: int) -> list[dict[str, Any]]:
        with self._lock:
            w = self.refresh()
            hits = search(w.embeddings32(), query, k)
            return [{**entry_json(w.entries[i]), "similarity": round(s, 4)} for i, s in hits]


def _rows(w: RecentWindow, model: str, last: int | None, since_s: float | None) -> Any:
    """Window rows to backtest on: this model's embeddings, the last N or the recent ones."""
    rows = np.flatnonzero([e.model == model for e in w.entries])
    if since_s is not None:
        cutoff = time.time() - since_s
        rows = rows[[w.entries[i].decided_at >= cutoff for i in rows]]
    if last is not None:
        rows = rows[-last:] if last else rows[:0]
    return rows


def entry_json(e: RecentEntry) -> dict[str, Any]:
    return {"upload_id": e.upload_id, "decided_at": e.decided_at, "decision": e.decision,
            "policy_version": e.policy_version, "flagged": list(e.flagged),
            "scores": dict(e.scores)}


def report_json(r: Backtest, entries: list[RecentEntry], version: int, seconds: float
                ) -> dict[str, Any]:
    def uploads(rows: list[int]) -> list[dict[str, Any]]:
        return [entry_json(entries[i]) for i in rows]

    def scored(pairs: list[tuple[int, float]]) -> list[dict[str, Any]]:
        return [{**entry_json(entries[i]), "score": round(s, 4)} for i, s in pairs]

    return {
        "uploads": r.uploads, "current_version": version, "seconds": round(seconds, 3),
        "from": entries[0].decided_at if entries else None,
        "to": entries[-1].decided_at if entries else None,
        "flagged_now": r.flagged_now, "flagged_draft": r.flagged_draft,
        "flag_rate_now": r.flag_rate(r.flagged_now),
        "flag_rate_draft": r.flag_rate(r.flagged_draft),
        "review_now": r.review_now, "review_draft": r.review_draft,
        "newly_flagged_total": r.newly_flagged_total,
        "no_longer_flagged_total": r.no_longer_flagged_total,
        "newly_flagged": uploads(r.newly_flagged),
        "no_longer_flagged": uploads(r.no_longer_flagged),
        "policies": [{
            "policy": p.policy, "change": p.change, "action_now": p.action_now,
            "action_draft": p.action_draft, "threshold_now": p.threshold_now,
            "threshold_draft": p.threshold_draft, "matches_now": p.matches_now,
            "matches_draft": p.matches_draft,
            "rate_now": r.flag_rate(p.matches_now), "rate_draft": r.flag_rate(p.matches_draft),
            "sweep": [[t, round(rate, 6)] for t, rate in p.sweep],
            "just_above": scored(p.just_above), "just_below": scored(p.just_below),
        } for p in r.policies],
    }
