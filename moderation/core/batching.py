"""Pure pieces of the worker: batching across messages and turning embeddings into
decisions. No I/O; the worker feeds them records and clocks."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from numpy.typing import NDArray

from moderation.contract.events import Decision, Upload
from moderation.core.scoring import PolicyMatrix, score, verdicts

T = TypeVar("T")


@dataclass
class Batcher(Generic[T]):
    """Collects items into batches of at most ``size``; a partial batch is released once its
    oldest item has waited ``linger_s`` (so a trickle of uploads is not held back)."""

    size: int
    linger_s: float
    _items: list[T] = field(default_factory=list)
    _since: float | None = None

    def add(self, item: T, now: float) -> None:
        if not self._items:
            self._since = now
        self._items.append(item)

    def __len__(self) -> int:
        return len(self._items)

    def take(self, now: float) -> list[T] | None:
        """A full batch, or a partial one that has lingered long enough, else None."""
        if not self._items:
            return None
        if len(self._items) < self.size and self._since is not None \
                and now - self._since < self.linger_s:
            return None
        out, self._items = self._items[:self.size], self._items[self.size:]
        self._since = now if self._items else None
        return out


def started_at(upload: Upload, kafka_timestamp_ms: int | None) -> datetime:
    """When the upload entered the platform: its ``created_at``, else the Kafka timestamp."""
    if upload.created_at is not None:
        return upload.created_at
    if kafka_timestamp_ms is not None and kafka_timestamp_ms >= 0:
        try:  # the producer sets it: any 64-bit number can arrive
            return datetime.fromtimestamp(kafka_timestamp_ms / 1000, UTC)
        except (OverflowError, OSError, ValueError):
            pass
    return datetime.now(UTC)


def decide(uploads: Sequence[tuple[Upload, datetime]], embeddings: NDArray[Any],
           matrix: PolicyMatrix, version: int, model: str,
           now: datetime | None = None) -> list[Decision]:
    """One decision per upload, scored as one vectorised batch."""
    if not uploads:
        return []
    now = now or datetime.now(UTC)
    scores = score(embeddings, matrix)
    return [Decision.build(upload.upload_id, verdicts(scores, matrix, row), version, model,
                           started, now)
            for row, (upload, started) in enumerate(uploads)]
