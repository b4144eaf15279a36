"""Dependency outages with real processes: Triton stopped for 30 s, Triton too slow, Redis
gone, broker restarted. One worker runs through all of them, against its own broker,
Redis and Triton (reached through a proxy that can hold replies back)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from moderation.cli.main import main
from moderation.config import Settings
from moderation.devtools.devstack import (
    TritonPorts,
    metric_value,
    start_redis,
    start_tansu,
    start_triton,
    start_worker,
    wait_for_partitions,
)
from moderation.devtools.processes import ManagedProcess
from moderation.devtools.provision import provision
from moderation.edges.kafka_io import committed_offsets, ensure_topics
from tests.pipeline_helpers import event, produce_tracked, read_outcomes
from tests.tcp_proxy import DelayProxy

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
MAX_IN_FLIGHT = 48


@dataclass
class Rig:
    tmp: Path
    env: dict[str, str]
    settings: Settings
    worker: ManagedProcess
    port: int
    tansu: ManagedProcess
    kafka_port: int
    redis: ManagedProcess
    redis_port: int
    triton: ManagedProcess
    triton_ports: TritonPorts
    proxy: DelayProxy
    version: int

    def ready(self) -> tuple[int, dict[str, bool]]:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=5) as r:
                return r.status, json.loads(r.read())["checks"]
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())["checks"]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return metric_value(self.port, name, labels) or 0.0


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp = tmp_path_factory.mktemp("outages")
    tansu, kafka_port = start_tansu(tmp)
    redis, redis_port = start_redis(tmp)
    triton_ports = TritonPorts.free()
    triton, _ = start_triton(tmp, ports=triton_ports, env={"MODERATION_MODEL__BUNDLE": "demo"})
    proxy = DelayProxy(("127.0.0.1", triton_ports.grpc))
    run = uuid.uuid4().hex[:6]
    env = {
        "MODERATION_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{kafka_port}",
        "MODERATION_KAFKA__GROUP_ID": f"outages-{run}",
        "MODERATION_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "MODERATION_REDIS__URL": f"redis://127.0.0.1:{redis_port}/0",
        "MODERATION_TRITON__URL": f"127.0.0.1:{proxy.port}",
        "MODERATION_TRITON__TIMEOUT_S": "2",
        "MODERATION_WORKER__RETRY_MAX_S": "2",
        "MODERATION_WORKER__MAX_IN_FLIGHT": str(MAX_IN_FLIGHT),
    }
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    settings = Settings()
    version = provision(settings, REPO / "policies")
    worker, port = start_worker(tmp, env)
    rig = Rig(tmp, env, settings, worker, port, tansu, kafka_port, redis, redis_port, triton,
              triton_ports, proxy, version)
    try:
        wait_for_partitions(worker, port, 60)
        yield rig
    finally:
        rig.worker.stop()
        proxy.close()
        for proc in (rig.triton, rig.redis, rig.tansu):
            proc.stop()
        mp.undo()


def uploads(prefix: str, n: int) -> list[tuple[str, bytes]]:
    samples = sorted((REPO / "samples").glob("*.*"))
    return [(f"{prefix}-{i}", event(f"{prefix}-{i}", samples[i % len(samples)].read_bytes()))
            for i in range(n)]


def wait_for(check: object, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.25)  # polling an observable condition of another process


def assert_commits_cover_only_settled(rig: Rig, placed: dict[str, tuple[int, int]],
                                      settled: set[str]) -> None:
    committed = committed_offsets(rig.settings.kafka, range(4))
    for uid, (partition, offset) in placed.items():
        if committed.get(partition) is not None and offset < (committed[partition] or 0):
            assert uid in settled, f"{uid} committed (partition {partition}) but undecided"


def test_triton_stopped_for_30_seconds(rig: Rig) -> None:
    first = produce_tracked(rig.settings, uploads("before-outage", 20))
    read_outcomes(rig.settings, set(first))
    rig.triton.stop()
    stopped = time.monotonic()
    placed = produce_tracked(rig.settings, uploads("during-outage", 120))
    wait_for(lambda: rig.ready()[0] == 503, 20, "readiness to drop")
    assert rig.ready()[1] == {"broker": True, "triton": False, "policies": True}
    time.sleep(max(0.0, 30 - (time.monotonic() - stopped)))  # the outage lasts 30 s
    seen = read_outcomes(rig.settings, set(placed), timeout_s=2)
    assert seen == {}  # nothing decided, nothing dead-lettered while Triton is down
    assert_commits_cover_only_settled(rig, placed, set())
    assert rig.metric("moderation_in_flight_messages") <= MAX_IN_FLIGHT

    rig.triton, _ = start_triton(rig.tmp, ports=rig.triton_ports,
                                 env={"MODERATION_MODEL__BUNDLE": "demo"})
    outcomes = read_outcomes(rig.settings, set(placed), timeout_s=180)
    assert set(outcomes) == set(placed)
    assert all(kind == "decision" for got in outcomes.values() for kind, _ in got)
    wait_for(lambda: rig.ready()[0] == 200, 30, "readiness to return")
    assert rig.metric("moderation_triton_errors_total", {"kind": "unavailable"}) > 0


def test_slow_triton_is_retried_with_bounded_work_in_flight(rig: Rig) -> None:
    rig.proxy.delay_s = 3.0  # every reply arrives after the 2 s client deadline
    try:
        errors_before = rig.metric("moderation_triton_errors_total", {"kind": "unavailable"})
        placed = produce_tracked(rig.settings, uploads("slow", 150))
        wait_for(lambda: rig.metric("moderation_triton_errors_total", {"kind": "unavailable"})
                 >= errors_before + 3, 60, "deadline errors")
        assert rig.metric("moderation_in_flight_messages") <= MAX_IN_FLIGHT
        assert read_outcomes(rig.settings, set(placed), timeout_s=2) == {}
        assert_commits_cover_only_settled(rig, placed, set())
    finally:
        rig.proxy.delay_s = 0.0
    outcomes = read_outcomes(rig.settings, set(placed), timeout_s=180)
    assert set(outcomes) == set(placed)
    assert all(kind == "decision" for got in outcomes.values() for kind, _ in got)
    peak_kib = int(next(line.split()[1] for line in
                        Path(f"/proc/{rig.worker.pid}/status").read_text().splitlines()
                        if line.startswith("VmHWM:")))
    assert peak_kib < 1_000_000


def test_redis_gone_keeps_the_last_known_policy_set(rig: Rig, capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    rig.redis.stop()
    try:
        placed = produce_tracked(rig.settings, uploads("no-redis", 30))
        outcomes = read_outcomes(rig.settings, set(placed), timeout_s=120)
        assert set(outcomes) == set(placed)
        versions = {d["policy_version"] for got in outcomes.values() for kind, d in got}
        assert versions == {rig.version}  # decided with, and stamped by, the last-known set
        assert main(["policies", "apply", str(REPO / "policies")]) == 2
        err = capsys.readouterr().err
        assert "error: Redis at redis://127.0.0.1:" in err and "cannot" in err
        assert rig.metric("moderation_dedupe_errors_total") > 0
        assert rig.ready()[0] == 200  # deciding is still possible
    finally:
        rig.redis, _ = start_redis(rig.tmp, port=rig.redis_port)


def test_broker_restart(rig: Rig) -> None:
    """Tansu keeps everything in memory: a restart loses the topics and committed offsets.
    What this shows: the worker reconnects, rejoins and decides new uploads. What it cannot
    show: that uncommitted records survive a broker failure (a replicated cluster with
    acks=all and min.insync.replicas >= 2 provides that)."""
    before = produce_tracked(rig.settings, uploads("before-restart", 10))
    assert set(read_outcomes(rig.settings, set(before))) == set(before)  # producer in use
    rig.tansu.stop()
    rig.tansu, _ = start_tansu(rig.tmp, port=rig.kafka_port)
    k = rig.settings.kafka
    ensure_topics(k, [k.input_topic, k.decision_topic, k.dead_letter_topic])
    placed = produce_tracked(rig.settings, uploads("after-restart", 20))
    outcomes = read_outcomes(rig.settings, set(placed), timeout_s=180)
    assert set(outcomes) == set(placed)
    assert rig.worker.alive()
