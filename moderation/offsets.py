"""Which offsets are safe to commit: the heart of at-least-once delivery. Pure logic.

Per partition, messages are ``track``-ed in the order they are polled and ``ack``-ed when
their decision (or dead-letter record) is acknowledged by the broker, in any order. The
committable offset is one past the longest acknowledged prefix of what was polled, so a
commit never skips an undecided upload. Offsets need not be contiguous (compaction and
transaction markers leave gaps).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class _Partition:
    pending: deque[int] = field(default_factory=deque)  # polled, in order
    acked: set[int] = field(default_factory=set)  # acked but still behind an un-acked one
    done_upto: int | None = None  # next offset after the acknowledged prefix
    committed: int | None = None


class OffsetTracker:
    """Tracks polled and acknowledged offsets for any number of partitions."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, _Partition] = {}

    def track(self, tp: Hashable, offset: int) -> None:
        part = self._parts.setdefault(tp, _Partition())
        if part.pending and offset <= part.pending[-1]:
            raise ValueError(f"{tp}: offset {offset} polled after {part.pending[-1]}")
        if part.done_upto is not None and offset < part.done_upto:
            raise ValueError(f"{tp}: offset {offset} is below the acknowledged prefix")
        part.pending.append(offset)

    def ack(self, tp: Hashable, offset: int) -> None:
        part = self._parts.get(tp)
        if part is None:
            return  # partition revoked meanwhile: its new owner will redo the message
        part.acked.add(offset)
        while part.pending and part.pending[0] in part.acked:
            done = part.pending.popleft()
            part.acked.discard(done)
            part.done_upto = done + 1

    def committable(self, tp: Hashable) -> int | None:
        """The offset to commit now, or None when nothing new is safe to commit."""
        part = self._parts.get(tp)
        if part is None or part.done_upto is None or part.done_upto == part.committed:
            return None
        return part.done_upto

    def all_committable(self) -> dict[Hashable, int]:
        out = {}
        for tp in self._parts:
            offset = self.committable(tp)
            if offset is not None:
                out[tp] = offset
        return out

    def mark_committed(self, tp: Hashable, offset: int) -> None:
        part = self._parts.get(tp)
        if part is not None:
            part.committed = offset

    def in_flight(self, tp: Hashable | None = None) -> int:
        """Polled but not yet part of the acknowledged prefix."""
        parts = self._parts.values() if tp is None else [self._parts.get(tp, _Partition())]
        return sum(len(p.pending) for p in parts)

    def revoke(self, tp: Hashable) -> int | None:
        """Forget a partition; returns what was safe to commit for it, if anything new."""
        offset = self.committable(tp)
        self._parts.pop(tp, None)
        return offset
