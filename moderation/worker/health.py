"""Liveness (the main loop turns) and readiness (broker reachable, Triton answering, a
policy set loaded) for ``/healthz`` and ``/readyz``."""

from __future__ import annotations

import time

from moderation.config import KafkaSettings
from moderation.edges.encoders import Encoder
from moderation.edges.live_policies import LivePolicies
from moderation.edges.metrics import Metrics
from moderation.edges.net import port_open
from moderation.worker.triton_gate import TritonGate


class Health:
    def __init__(self, kafka: KafkaSettings, encoder: Encoder, policies: LivePolicies,
                 gate: TritonGate, metrics: Metrics) -> None:
        self.kafka = kafka
        self.encoder = encoder
        self.policies = policies
        self.gate = gate
        self.metrics = metrics
        self._tick = time.monotonic()
        self._broker_checked = (0.0, False)

    def tick(self) -> None:
        """The main loop turned."""
        self._tick = time.monotonic()

    def live(self) -> bool:
        return time.monotonic() - self._tick < 60.0

    def readiness(self) -> dict[str, bool]:
        ready_fn = getattr(self.encoder, "ready", None)
        triton = (ready_fn() if ready_fn else True) and not self.gate.failing
        checks = {"broker": self._broker_reachable(), "triton": bool(triton),
                  "policies": self.policies.active is not None}
        self.metrics.ready.set(1 if all(checks.values()) else 0)
        return checks

    def _broker_reachable(self) -> bool:
        checked_at, ok = self._broker_checked
        if time.monotonic() - checked_at >= 2.0:  # probes come often; connect at most every 2 s
            servers = [s.strip().rpartition(":") for s in self.kafka.bootstrap_servers.split(",")]
            ok = any(port.isdigit() and port_open(int(port), host or "127.0.0.1")
                     for host, _, port in servers)
            self._broker_checked = (time.monotonic(), ok)
        return ok
