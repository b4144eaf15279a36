"""The recent-uploads window (pure): what each decided upload leaves for the policy console,
its encoding as Redis stream fields, and the in-memory window the console backtests and
searches (embeddings as one float16 matrix).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from moderation.contract.events import Decision


@dataclass(frozen=True)
class RecentEntry:
    """One decided upload as the console sees it."""

    upload_id: str
    decided_at: float  # Unix seconds
    decision: str
    policy_version: int
    model: str
    scores: Mapping[str, float]  # policy -> score
    flagged: tuple[str, ...]
    embedding: NDArray[Any]  # [D] float16

    @classmethod
    def of(cls, decision: Decision, embedding: NDArray[Any]) -> RecentEntry:
        return cls(decision.upload_id, decision.decided_at.timestamp(), decision.decision,
                   decision.policy_version, decision.model,
                   {v.policy: v.score for v in decision.verdicts},
                   tuple(decision.flagged_policies), np.asarray(embedding, np.float16))

    def to_fields(self) -> dict[str, bytes]:
        meta = {"u": self.upload_id, "t": round(self.decided_at, 3), "d": self.decision,
                "v": self.policy_version, "m": self.model, "f": list(self.flagged),
                "s": self.scores}
        return {"meta": json.dumps(meta, separators=(",", ":")).encode(),
                "emb": np.asarray(self.embedding, "<f2").tobytes()}

    @classmethod
    def from_fields(cls, fields: Mapping[bytes, bytes]) -> RecentEntry:
        meta = json.loads(fields[b"meta"])
        return cls(meta["u"], float(meta["t"]), meta["d"], int(meta["v"]), meta["m"],
                   meta["s"], tuple(meta["f"]), np.frombuffer(fields[b"emb"], "<f2"))


class RecentWindow:
    """The last uploads, oldest first, one row per upload id (its latest decision), as
    read from the index. Appends amortise like a list; trimming drops the oldest rows."""

    def __init__(self) -> None:
        self.entries: list[RecentEntry] = []
        self.stream_ids: list[str] = []
        self._emb: NDArray[Any] = np.zeros((0, 0), np.float16)
        self._rows = 0
        self._row_of: dict[str, int] = {}
        self._emb32: NDArray[Any] | None = None

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def embeddings(self) -> NDArray[Any]:
        """[N, D] float16, row i = entries[i]."""
        return self._emb[:self._rows]

    def embeddings32(self) -> NDArray[Any]:
        """The same as float32, kept until the window changes (matrix products on float16
        have no BLAS path: 100x slower)."""
        if self._emb32 is None or len(self._emb32) != self._rows:
            self._emb32 = self.embeddings.astype(np.float32)
        return self._emb32

    def row(self, upload_id: str) -> int | None:
        return self._row_of.get(upload_id)

    def extend(self, items: Sequence[tuple[str, RecentEntry]]) -> None:
        """Append ``(stream id, entry)`` pairs read after the last one; a repeated upload id
        (decided again) replaces its older row."""
        if not items:
            return
        repeated = {e.upload_id for _, e in items if e.upload_id in self._row_of}
        latest = {e.upload_id: i for i, (_, e) in enumerate(items)}
        if repeated:
            self._keep([i for i, e in enumerate(self.entries) if e.upload_id not in repeated])
        fresh = [(sid, e) for i, (sid, e) in enumerate(items) if latest[e.upload_id] == i]
        dim = len(fresh[0][1].embedding)
        if self._emb.shape[1] != dim:  # first rows, or a model with another width
            self._keep([])
            self._emb = np.zeros((0, dim), np.float16)
        need = self._rows + len(fresh)
        if need > len(self._emb):
            grown = np.zeros((max(need, 2 * len(self._emb), 1024), dim), np.float16)
            grown[:self._rows] = self._emb[:self._rows]
            self._emb = grown
        for sid, e in fresh:
            self._row_of[e.upload_id] = len(self.entries)
            self.entries.append(e)
            self.stream_ids.append(sid)
        self._emb[self._rows:need] = np.stack([e.embedding for _, e in fresh])
        self._rows = need
        self._emb32 = None

    def drop_before(self, stream_id: str | None, min_decided_at: float) -> None:
        """Forget rows the index trimmed (stream ids below its oldest) or older than the
        age limit."""
        oldest = _id_key(stream_id) if stream_id else None
        keep = [i for i, (sid, e) in enumerate(zip(self.stream_ids, self.entries, strict=True))
                if e.decided_at >= min_decided_at and (oldest is None or _id_key(sid) >= oldest)]
        if len(keep) != len(self.entries):
            self._keep(keep)

    def _keep(self, rows: list[int]) -> None:
        self.entries = [self.entries[i] for i in rows]
        self.stream_ids = [self.stream_ids[i] for i in rows]
        if self._rows:
            self._emb = self._emb[np.asarray(rows, np.int64)] if rows else self._emb[:0]
        self._rows = len(rows)
        self._emb32 = None
        self._row_of = {e.upload_id: i for i, e in enumerate(self.entries)}


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)
