"""How often work on a record was started without finishing: the guard against poison
records that kill their worker (a decoder segfault, the OOM killer) or Triton's stub.

Per (group, topic, partition, offset), kept in Redis so that the next owner of a partition
sees what happened under the previous one. The worker reads the counts when it polls,
increments them when work starts, and deletes them once the record is settled; a record
whose count reaches ``worker.max_attempts`` is dead-lettered as ``poison_record`` without
being processed again. When Redis is unreachable the guard is skipped (the worker keeps
deciding); the counts it could not write are simply lower.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from moderation.config import RedisSettings
from moderation.edges.side_store import PausingRedis

Coordinates = tuple[str, int, int]  # topic, partition, offset


class AttemptCounter(Protocol):
    def counts(self, records: Sequence[Coordinates]) -> list[int]:
        """Attempts started so far; raises StoreError when unreachable."""

    def start(self, records: Sequence[Coordinates]) -> list[int]:
        """Count one more attempt for each; returns the new counts."""

    def forget(self, records: Sequence[Coordinates]) -> None:
        """The records are settled: drop their counts."""


class RedisAttemptCounter(PausingRedis):
    def __init__(self, url: str, prefix: str, group: str, ttl_s: int = 7 * 86_400,
                 password: str | None = None, timeout_s: float = 0.5,
                 pause_after_error_s: float = 5.0) -> None:
        super().__init__(url, "attempt counter", password, timeout_s, pause_after_error_s)
        self.prefix = f"{prefix}:attempts:{group}:"
        self.ttl_s = ttl_s

    @classmethod
    def from_settings(cls, settings: RedisSettings, group: str, ttl_s: int
                      ) -> RedisAttemptCounter:
        password = settings.password.get_secret_value() if settings.password else None
        return cls(settings.url, settings.key_prefix, group, ttl_s, password)

    def _key(self, c: Coordinates) -> str:
        return f"{self.prefix}{c[0]}:{c[1]}:{c[2]}"

    def counts(self, records: Sequence[Coordinates]) -> list[int]:
        if not records:
            return []
        found = self.call("read", lambda c: c.mget([self._key(r) for r in records]))
        return [int(v) if v is not None else 0 for v in found]

    def start(self, records: Sequence[Coordinates]) -> list[int]:
        if not records:
            return []

        def incr(client: Any) -> list[int]:
            pipe = client.pipeline(transaction=False)
            for r in records:
                pipe.incr(self._key(r))
                pipe.expire(self._key(r), self.ttl_s)
            return [int(n) for n in pipe.execute()[::2]]

        return self.call("count", incr)

    def forget(self, records: Sequence[Coordinates]) -> None:
        if records:
            self.call("forget", lambda c: c.delete(*map(self._key, records)))
