"""The policy set a worker scores with: follows Redis, and survives Redis going away.

A background thread listens for change notifications (pub/sub, so a switch lands in well
under the 2 s the policy team is promised) and also re-reads the current version every
few seconds, which covers notifications missed while disconnected. When Redis is down the
last-known set stays in use; decisions keep saying which version they used.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from moderation.core.scoring import PolicyMatrix
from moderation.edges.metrics import Metrics
from moderation.edges.policy_store import StoredPolicySet, StoreError

log = logging.getLogger(__name__)


class PolicySource(Protocol):
    def current_version(self) -> int | None: ...

    def load(self, version: int | None = None) -> StoredPolicySet: ...

    def notifications(self, timeout_s: float = 1.0) -> Iterator[int | None]: ...


@dataclass(frozen=True)
class ActivePolicies:
    version: int
    model: str
    matrix: PolicyMatrix


class LivePolicies:
    def __init__(self, source: PolicySource, expected_model: Callable[[], str | None],
                 metrics: Metrics | None = None, recheck_s: float = 5.0) -> None:
        self.source = source
        self.expected_model = expected_model
        self.metrics = metrics
        self.recheck_s = recheck_s
        self._active: ActivePolicies | None = None
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._rejected: int | None = None
        self.redis_ok = False

    @property
    def active(self) -> ActivePolicies | None:
        return self._active

    def wait_loaded(self, timeout_s: float) -> ActivePolicies | None:
        with self._changed:
            self._changed.wait_for(lambda: self._active is not None, timeout_s)
            return self._active

    def wait_version(self, version: int, timeout_s: float) -> bool:
        """Block until ``version`` (or a later one) is active; for tests and the demo."""
        with self._changed:
            return self._changed.wait_for(
                lambda: self._active is not None and self._active.version >= version, timeout_s)

    def refresh(self) -> ActivePolicies | None:
        """Switch to the store's current version if it is new; raises StoreError."""
        version = self.source.current_version()
        self.redis_ok = True
        active = self._active
        if version is None or (active and active.version == version) or version == self._rejected:
            return active
        stored = self.source.load(version)
        model = self.expected_model()
        if model is None:
            return active  # encoder unknown yet (Triton down): decide later which set fits
        if stored.model != model:
            self._rejected = version
            self._count("error")
            log.error("policy set version=%d was embedded by model=%s but Triton serves "
                      "model=%s: ignoring it (re-run 'moderation policies apply')",
                      version, stored.model, model)
            return active
        fresh = ActivePolicies(stored.version, stored.model, stored.matrix())
        with self._changed:
            self._active = fresh
            self._changed.notify_all()
        self._count("ok")
        if self.metrics:
            self.metrics.policy_version.set(fresh.version)
        log.info("policy set switched version=%d policies=%d", fresh.version,
                 len(fresh.matrix.names))
        return fresh

    def _count(self, result: str) -> None:
        if self.metrics:
            self.metrics.policy_reloads.labels(result).inc()

    def follow(self, stop: threading.Event, backoff_max_s: float = 5.0) -> None:
        """Thread body: refresh on every notification and every ``recheck_s`` until stop."""
        backoff = 0.2
        while not stop.is_set():
            try:
                self.refresh()
                quiet = 0.0
                for version in self.source.notifications(timeout_s=0.25):
                    backoff = 0.2
                    if stop.is_set():
                        return
                    quiet = 0.0 if version is not None else quiet + 0.25
                    if version is not None or quiet >= self.recheck_s:
                        quiet = 0.0
                        self.refresh()
            except StoreError as exc:
                if self.redis_ok:
                    log.warning("policy store unreachable, keeping version=%s: %s",
                                self._active.version if self._active else None, exc)
                self.redis_ok = False
                stop.wait(backoff)
                backoff = min(backoff * 2, backoff_max_s)
            except Exception:  # never let the follower thread die silently
                log.exception("policy follower failed; retrying")
                stop.wait(backoff)
                backoff = min(backoff * 2, backoff_max_s)
