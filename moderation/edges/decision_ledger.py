"""Suppressing repeat decisions after a replay: a ledger of (upload_id, policy version)
pairs whose decision the broker has acknowledged, kept in Redis with a TTL.

The guarantee stays at-least-once: a pair is recorded only *after* its decision is
acknowledged, so a crash can never lose a decision to the ledger; it can still repeat one
(a crash between the broker's ack and the ledger write). When Redis is unreachable the
check is skipped and uploads are decided again: duplicates, never losses.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from moderation.config import RedisSettings
from moderation.edges.side_store import PausingRedis

log = logging.getLogger(__name__)


def ledger_key(upload_id: str, policy_version: int) -> str:
    return f"{upload_id}@{policy_version}"


class DecisionLedger(Protocol):
    def decided(self, keys: Sequence[str]) -> set[str]:
        """The keys already decided; raises StoreError when the ledger is unreachable."""

    def record(self, keys: Sequence[str]) -> None: ...


class RedisDecisionLedger(PausingRedis):
    def __init__(self, url: str, prefix: str = "moderation", ttl_s: int = 86_400,
                 password: str | None = None, timeout_s: float = 0.5,
                 pause_after_error_s: float = 5.0) -> None:
        super().__init__(url, "decision ledger", password, timeout_s, pause_after_error_s)
        self.prefix = f"{prefix}:decided:"
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: RedisSettings, ttl_s: int) -> RedisDecisionLedger:
        password = settings.password.get_secret_value() if settings.password else None
        return cls(settings.url, settings.key_prefix, ttl_s, password)

    def decided(self, keys: Sequence[str]) -> set[str]:
        if not keys:
            return set()
        found = self.call("check", lambda c: c.mget([self.prefix + k for k in keys]))
        return {k for k, v in zip(keys, found, strict=True) if v is not None}

    def record(self, keys: Sequence[str]) -> None:
        if not keys:
            return

        def write(client: Any) -> None:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.set(self.prefix + k, b"1", nx=True, ex=self.ttl_s)
            pipe.execute()

        self.call("record", write)
