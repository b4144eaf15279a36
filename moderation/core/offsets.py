"""Which offsets are safe to commit: the heart of at-least-once delivery. Pure logic.

Per partition, messages are ``track``-ed as they are polled and ``ack``-ed when their
decision (or dead-letter record) is acknowledged by the broker, in any order. The
committable offset is one past the longest acknowledged prefix of what was polled, so a
commit never skips an undecided upload. Offsets need not be contiguous (compaction and
transaction markers leave gaps), and they need not arrive in order: after a rebalance the
client can hand out records it fetched earlier and then rewind to the committed offset, so
a lower offset is slotted in where it belongs rather than refused (refusing it would leave
that upload undecided while later acks commit past it).
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable
from dataclasses import dataclass, field


@dataclass
class _Partition:
    pending: list[int] = field(default_factory=list)  # polled, not yet in the prefix; sorted
    acked: set[int] = field(default_factory=set)  # acked but still behind an un-acked one
    done_upto: int | None = None  # next offset after the acknowledged prefix
    committed: int | None = None


class OffsetTracker:
    """Tracks polled and acknowledged offsets for any number of partitions."""

    def __init__(self) -> None:
        self._parts: dict[Hashable, _Partition] = {}

    def track(self, tp: Hashable, offset: int) -> bool:
        """Record a polled offset. False when it is already inside the acknowledged prefix
        (a redelivery of a settled message: deciding it again is harmless, and its ack
        changes nothing)."""
        part = self._parts.setdefault(tp, _Partition())
        if part.done_upto is not None and offset < part.done_upto:
            return False
        i = bisect.bisect_left(part.pending, offset)
        if i == len(part.pending) or part.pending[i] != offset:  # a second copy: one entry
            part.pending.insert(i, offset)
        return True

    def ack(self, tp: Hashable, offset: int) -> None:
        part = self._parts.get(tp)
        if part is None:
            return  # partition revoked meanwhile: its new owner will redo the message
        if part.done_upto is not None and offset < part.done_upto:
            return  # already inside the prefix
        part.acked.add(offset)
        while part.pending and part.pending[0] in part.acked:
            done = part.pending.pop(0)
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
