"""`python -m moderation.tools.roundtrip` (the chart's helm test) against a running worker."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from moderation.config import Settings
from moderation.devtools.devstack import start_worker, wait_for_partitions
from moderation.devtools.provision import provision
from moderation.tools.roundtrip import roundtrip

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker_env(kafka_bootstrap: str, redis_url: str, triton_demo: str,
               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    run = uuid.uuid4().hex[:6]
    env = {"MODERATION_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
           "MODERATION_KAFKA__INPUT_TOPIC": f"uploads-{run}",
           "MODERATION_KAFKA__DECISION_TOPIC": f"decisions-{run}",
           "MODERATION_KAFKA__DEAD_LETTER_TOPIC": f"dlq-{run}",
           "MODERATION_KAFKA__GROUP_ID": f"group-{run}",
           "MODERATION_KAFKA__SESSION_TIMEOUT_MS": "6000",
           "MODERATION_REDIS__URL": redis_url, "MODERATION_REDIS__KEY_PREFIX": f"rt-{run}",
           "MODERATION_TRITON__URL": triton_demo}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    settings = Settings()
    provision(settings, REPO / "policies")
    worker, port = start_worker(tmp_path, env)
    try:
        wait_for_partitions(worker, port, 60)
        yield settings
    finally:
        worker.stop()


@pytest.mark.slow
@pytest.mark.integration
def test_one_upload_comes_back_decided(worker_env: Settings) -> None:
    upload_id, outcome = roundtrip(worker_env.kafka, timeout_s=60)
    assert upload_id.startswith("helm-test-")
    assert outcome is not None and outcome["upload_id"] == upload_id
    assert outcome["decision"] in ("allow", "flag")
