"""`python -m moderation.tools.roundtrip` (the chart's helm test) against a running worker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from moderation.config import Settings
from moderation.devtools.devstack import start_worker, wait_for_partitions
from moderation.devtools.provision import provision
from moderation.tools.roundtrip import roundtrip
from tests.pipeline_helpers import worker_env

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker_settings(kafka_bootstrap: str, redis_url: str, triton_demo: str,
               monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Settings]:
    env = worker_env(kafka_bootstrap, redis_url, triton_demo, "roundtrip")
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
def test_one_upload_comes_back_decided(worker_settings: Settings) -> None:
    upload_id, outcome = roundtrip(worker_settings.kafka, timeout_s=60)
    assert upload_id.startswith("helm-test-")
    assert outcome is not None and outcome["upload_id"] == upload_id
    assert outcome["decision"] in ("allow", "flag")
