"""The offset tracker, exhaustively: out-of-order acks, gaps, revocation."""

import itertools

from hypothesis import given
from hypothesis import strategies as st

from moderation.core.offsets import OffsetTracker


def expected(polled: list[int], acked: set[int]) -> int | None:
    """One past the longest acknowledged prefix of what was polled."""
    upto = None
    for o in polled:
        if o not in acked:
            break
        upto = o + 1
    return upto


def test_in_order_acks() -> None:
    t = OffsetTracker()
    for o in range(3):
        t.track("p0", o)
    assert t.committable("p0") is None
    t.ack("p0", 0)
    assert t.committable("p0") == 1
    t.mark_committed("p0", 1)
    assert t.committable("p0") is None  # nothing new
    t.ack("p0", 2)
    assert t.committable("p0") is None  # 1 is still undecided
    t.ack("p0", 1)
    assert t.committable("p0") == 3
    assert t.in_flight() == 0


def test_every_ack_order_of_five_messages_with_gaps() -> None:
    polled = [3, 4, 7, 8, 12]  # compaction leaves gaps
    for order in itertools.permutations(polled):
        t = OffsetTracker()
        for o in polled:
            t.track("p", o)
        acked: set[int] = set()
        for o in order:
            t.ack("p", o)
            acked.add(o)
            assert t.committable("p") == expected(polled, acked)
        assert t.committable("p") == 13


@given(st.lists(st.integers(0, 3), min_size=1, max_size=40), st.randoms())
def test_property_never_commits_past_an_undecided_message(gaps, rnd) -> None:  # type: ignore[no-untyped-def]
    polled, o = [], 0
    for g in gaps:
        o += 1 + g
        polled.append(o)
    t = OffsetTracker()
    for x in polled:
        t.track(("t", 1), x)
    order = list(polled)
    rnd.shuffle(order)
    acked: set[int] = set()
    for x in order[: rnd.randint(0, len(order))]:
        t.ack(("t", 1), x)
        acked.add(x)
        c = t.committable(("t", 1))
        assert c == expected(polled, acked)
        undecided = [p for p in polled if p not in acked]
        if c is not None and undecided:
            assert c <= min(undecided)


def test_partitions_are_independent_and_revocation_forgets() -> None:
    t = OffsetTracker()
    t.track("a", 0)
    t.track("b", 10)
    t.ack("b", 10)
    assert t.all_committable() == {"b": 11}
    t.ack("a", 0)
    assert t.revoke("a") == 1
    assert t.committable("a") is None
    t.ack("a", 5)  # a late ack for a revoked partition is ignored
    assert t.committable("a") is None and t.in_flight("a") == 0


def test_a_rewind_is_slotted_in_and_never_committed_past() -> None:
    """After a rebalance the client may hand out 7, 8 and then rewind to 5: the commit must
    wait for 5 and 6 (refusing them once lost those uploads)."""
    t = OffsetTracker()
    assert t.track("p", 7) and t.track("p", 8)
    assert t.track("p", 5) and t.track("p", 6)
    t.ack("p", 7)
    t.ack("p", 8)
    assert t.committable("p") is None and t.in_flight("p") == 4
    t.ack("p", 5)
    assert t.committable("p") == 6
    t.ack("p", 6)
    assert t.committable("p") == 9


def test_redelivery_of_settled_or_pending_offsets() -> None:
    t = OffsetTracker()
    t.track("p", 5)
    t.track("p", 5)  # a second copy while the first is in flight: one entry
    assert t.in_flight("p") == 1
    t.ack("p", 5)
    assert t.committable("p") == 6
    assert t.track("p", 2) is False  # already settled: decided again, nothing to wait for
    t.ack("p", 2)
    assert t.committable("p") == 6 and t.in_flight("p") == 0
