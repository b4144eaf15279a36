"""The decision ledger against a real redis-server."""

import time

from moderation.devtools.processes import free_port
from moderation.edges.decision_ledger import RedisDecisionLedger, ledger_key
from moderation.edges.policy_store import StoreError


def test_records_and_finds_decided_pairs(redis_url: str) -> None:
    ledger = RedisDecisionLedger(redis_url, prefix=f"t{time.monotonic_ns()}", ttl_s=60)
    a, b = ledger_key("u-1", 3), ledger_key("u-2", 3)
    assert ledger.decided([a, b]) == set()
    ledger.record([a])
    assert ledger.decided([a, b]) == {a}
    assert ledger.decided([ledger_key("u-1", 4)]) == set()  # a new policy version decides anew
    assert 0 < ledger.client.ttl(ledger.prefix + a) <= 60


def test_unreachable_redis_fails_fast_then_skips_for_a_while() -> None:
    ledger = RedisDecisionLedger(f"redis://127.0.0.1:{free_port()}/0", pause_after_error_s=60)
    for call in (lambda: ledger.decided(["x@1"]), lambda: ledger.record(["x@1"])):
        try:
            call()
        except StoreError as exc:
            assert "decision ledger" in str(exc)
        else:
            raise AssertionError("expected StoreError")
    assert ledger._down_until > time.monotonic()
