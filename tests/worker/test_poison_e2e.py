"""Records that kill whatever handles them, on real processes: the worker (a SIGSEGV while
validating), Triton's python-backend stub (exits while decoding) and a decode that hangs
past the client deadline. Each ends as one ``poison_record`` dead letter after
``worker.max_attempts`` attempts while every other upload is decided; the test restarts
dead workers, and a Triton whose stub died, the way a supervisor would.

Fault markers (``moderation.faults``) are enabled only in this module's worker and Triton.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from moderation import faults
from moderation.config import Settings
from moderation.contract.errors import EncoderError
from moderation.devtools.devstack import (
    TritonPorts,
    metric_value,
    start_triton,
    start_worker,
    wait_for_partitions,
)
from moderation.devtools.processes import ManagedProcess
from moderation.devtools.provision import provision
from moderation.edges.encoders import TritonEncoder
from moderation.edges.kafka_io import poll_keyed, read_from_start
from moderation.worker.triton_gate import CANARY
from tests.pipeline_helpers import event, produce, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
FAULTS = {"MODERATION_FAULTS__ENABLED": "true"}


class TritonSupervisor:
    """A Triton with fault markers enabled, restarted on the same ports when its stub has
    died: Triton 2.51's python backend never restarts a dead stub, and its health
    endpoints still say ready, so only a real inference tells (as a liveness probe must)."""

    def __init__(self, tmp: Path) -> None:
        self.tmp, self.ports = tmp, TritonPorts.free()
        self.proc, _ = start_triton(tmp, ports=self.ports, env=FAULTS)
        self.restarts = 0
        self._probe = TritonEncoder(f"127.0.0.1:{self.ports.grpc}", timeout_s=2.0)

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.ports.grpc}"

    def check(self) -> None:
        try:
            self._probe.embed_images([CANARY])
        except EncoderError as exc:
            if "is not healthy" in str(exc):
                self.proc.stop()
                self.proc, _ = start_triton(self.tmp, ports=self.ports, env=FAULTS)
                self.restarts += 1

    def stop(self) -> None:
        self._probe.close()
        self.proc.stop()


@pytest.fixture(scope="module")
def triton_with_faults(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonSupervisor]:
    sup = TritonSupervisor(tmp_path_factory.mktemp("triton-faults"))
    try:
        yield sup
    finally:
        sup.stop()


@dataclass
class Run:
    settings: Settings
    env: dict[str, str]
    tmp: Path
    worker: ManagedProcess
    port: int
    worker_starts: int = 1

    def supervise(self, triton: TritonSupervisor) -> None:
        if not self.worker.alive():
            self.worker, self.port = start_worker(self.tmp, self.env)
            self.worker_starts += 1
        triton.check()

    def outcomes(self, keys: set[str], triton: TritonSupervisor, timeout_s: float = 300.0
                 ) -> dict[str, list[str]]:
        """key -> ["decision" | error-type, ...], restarting what dies meanwhile."""
        import time

        k = self.settings.kafka
        reader = read_from_start(k, [k.decision_topic, k.dead_letter_topic])
        got: dict[str, list[str]] = {}
        deadline = time.monotonic() + timeout_s
        try:
            while not keys <= got.keys() and time.monotonic() < deadline:
                for key, r in poll_keyed(reader, 500):
                    if key in keys:
                        got.setdefault(key, []).append(
                            "decision" if r.topic == k.decision_topic
                            else dict(r.headers)["error-type"].decode())
                self.supervise(triton)
        finally:
            reader.close()
        return got


def _start(kafka_bootstrap: str, redis_url: str, triton: TritonSupervisor, tmp: Path,
           **extra: str) -> Run:
    env = {**worker_env(kafka_bootstrap, redis_url, triton.url, "poison"), **FAULTS, **extra}
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, value)
    settings = Settings()
    mp.undo()
    provision(settings, REPO / "policies")
    worker, port = start_worker(tmp, env)
    wait_for_partitions(worker, port, 60)
    return Run(settings, env, tmp, worker, port)


def _uploads(n: int) -> list[tuple[str, bytes]]:
    samples = sorted((REPO / "samples").glob("*.*"))[:n]
    return [(f"ok-{p.stem}", p.read_bytes()) for p in samples]


def _send(run: Run, items: list[tuple[str, bytes]]) -> None:
    produce(run.settings, [(key, event(key, image), []) for key, image in items])


def test_a_record_that_kills_its_worker_ends_as_one_poison_record(
        kafka_bootstrap: str, redis_url: str, triton_with_faults: TritonSupervisor,
        tmp_path: Path) -> None:
    run = _start(kafka_bootstrap, redis_url, triton_with_faults, tmp_path)
    good = _uploads(12)
    killer = ("killer", good[0][1] + faults.marker("kill-worker"))
    items = [*good[:6], killer, *good[6:]]
    try:
        _send(run, items)
        outcomes = run.outcomes({key for key, _ in items}, triton_with_faults)
        assert outcomes.get("killer") == ["poison_record"]
        assert all(outcomes.get(key, ["lost"]) and set(outcomes[key]) == {"decision"}
                   for key, _ in good), outcomes
        # it killed the worker on attempts 1, 2 and 3; the 4th start dead-lettered it
        assert run.worker_starts == 1 + run.settings.worker.max_attempts
        canary = [("canary-after-kills", good[1][1])]
        _send(run, canary)
        assert run.outcomes({"canary-after-kills"}, triton_with_faults) == {
            "canary-after-kills": ["decision"]}
        assert run.worker.alive()
    finally:
        run.worker.stop()
    log = run.worker.log_path.read_text()
    assert "processing alone: an earlier attempt did not finish" in log
    assert "error_type=poison_record" in log


def test_records_that_crash_or_hang_tritons_stub_end_as_poison_records(
        kafka_bootstrap: str, redis_url: str, triton_with_faults: TritonSupervisor,
        tmp_path: Path) -> None:
    run = _start(kafka_bootstrap, redis_url, triton_with_faults, tmp_path,
                 MODERATION_TRITON__TIMEOUT_S="2")
    good = _uploads(10)
    hang = ("hangs-stub", good[0][1] + faults.marker("hang-stub", 4))
    crash = ("crashes-stub", good[1][1] + faults.marker("crash-stub"))
    items = [*good[:5], hang, *good[5:], crash]
    restarts_before = triton_with_faults.restarts
    try:
        _send(run, items)
        outcomes = run.outcomes({key for key, _ in items}, triton_with_faults)
        assert outcomes.get("hangs-stub") == ["poison_record"]
        assert outcomes.get("crashes-stub") == ["poison_record"]
        assert all(set(outcomes.get(key, ["lost"])) == {"decision"} for key, _ in good), outcomes
        assert run.worker_starts == 1  # Triton's trouble never stopped the worker
        # the crash needed a Triton restart per attempt: twice in the batch, then alone
        assert triton_with_faults.restarts - restarts_before >= run.settings.worker.max_attempts
        _send(run, [("canary-after-stub", good[2][1])])
        assert run.outcomes({"canary-after-stub"}, triton_with_faults) == {
            "canary-after-stub": ["decision"]}
        assert (metric_value(run.port, "moderation_dead_letters_total",
                             {"error_type": "poison_record"}) or 0) >= 1
    finally:
        run.worker.stop()
    assert "Traceback" not in run.worker.log_path.read_text()
