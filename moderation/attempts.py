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

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from moderation.config import RedisSettings
from moderation.store import StoreError

Coordinates = tuple[str, int, int]  # topic, partition, offset
T = TypeVar("T")


class AttemptCounter(Protocol):
    def counts(self, records: Sequence[Coordinates]) -> list[int]:
        """Attempts started so far; raises StoreError when unreachable."""

    def start(self, records: Sequence[Coordinates]) -> list[int]:
        """Count one more attempt for each; returns the new counts."""

    def forget(self, records: Sequence[Coordinates]) -> None:
        """The records are settled: drop their counts."""


class RedisAttemptCounter:
    def __init__(self, url: str, prefix: str, group: str, ttl_s: int = 7 * 86_400,
                 password: str | None = None, timeout_s: float = 0.5,
                 pause_after_error_s: float = 5.0) -> None:
        import redis

        self._errors = redis.RedisError
        self.client = redis.Redis.from_url(url, password=password, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s)
        self.prefix = f"{prefix}:attempts:{group}:"
        self.ttl_s = ttl_s
        self.pause_after_error_s = pause_after_error_s
        self._down_until = 0.0

    @classmethod
    def from_settings(cls, settings: RedisSettings, group: str, ttl_s: int
                      ) -> RedisAttemptCounter:
        password = settings.password.get_secret_value() if settings.password else None
        return cls(settings.url, settings.key_prefix, group, ttl_s, password)

    def _key(self, c: Coordinates) -> str:
        return f"{self.prefix}{c[0]}:{c[1]}:{c[2]}"

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        if time.monotonic() < self._down_until:  # do not pay a timeout per poll
            raise StoreError(f"attempt counter: Redis marked down, skipping {what}")
        try:
            return fn()
        except self._errors as exc:
            self._down_until = time.monotonic() + self.pause_after_error_s
            raise StoreError(f"attempt counter: cannot {what}: {exc}") from exc

    def counts(self, records: Sequence[Coordinates]) -> list[int]:
        if not records:
            return []
        found: list[Any] = self._call(
            "read", lambda: list(self.client.mget([self._key(c) for c in records])))
        return [int(v) if v is not None else 0 for v in found]

    def start(self, records: Sequence[Coordinates]) -> list[int]:
        if not records:
            return []

        def incr() -> list[int]:
            pipe = self.client.pipeline(transaction=False)
            for c in records:
                pipe.incr(self._key(c))
                pipe.expire(self._key(c), self.ttl_s)
            return [int(n) for n in pipe.execute()[::2]]

        return self._call("count", incr)

    def forget(self, records: Sequence[Coordinates]) -> None:
        if records:
            self._call("forget", lambda: self.client.delete(*map(self._key, records)))
