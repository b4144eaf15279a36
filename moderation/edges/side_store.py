"""Best-effort Redis side stores (the decision ledger, the attempt counter): short
timeouts, and after a failure no call for a while, so an outage costs no per-batch
timeouts. Their callers treat ``StoreError`` as "skip this safeguard", never as fatal."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from moderation.edges.policy_store import StoreError

T = TypeVar("T")


class PausingRedis:
    def __init__(self, url: str, name: str, password: str | None = None,
                 timeout_s: float = 0.5, pause_after_error_s: float = 5.0) -> None:
        import redis

        self._errors = redis.RedisError
        self.client = redis.Redis.from_url(url, password=password, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s)
        self.name = name
        self.pause_after_error_s = pause_after_error_s
        self._down_until = 0.0

    def call(self, what: str, fn: Callable[[Any], T]) -> T:
        """``fn(client)``, or StoreError naming ``what`` (also while paused)."""
        if time.monotonic() < self._down_until:
            raise StoreError(f"{self.name}: Redis marked down, skipping {what}")
        try:
            return fn(self.client)
        except self._errors as exc:
            self._down_until = time.monotonic() + self.pause_after_error_s
            raise StoreError(f"{self.name}: cannot {what}: {exc}") from exc


class Availability:
    """Logs a side store going away and coming back once per change, and counts failures."""

    def __init__(self, log: logging.Logger, failures: Any, down: str, up: str) -> None:
        self.log, self.failures, self.down_msg, self.up_msg = log, failures, down, up
        self.ok = True

    def up(self) -> None:
        if not self.ok:
            self.log.info(self.up_msg)
        self.ok = True

    def down(self, exc: StoreError) -> None:
        self.failures.inc()
        if self.ok:
            self.log.warning("%s: %s", self.down_msg, exc)
        self.ok = False
