"""The chart's Triton liveness probe: a real inference on each model."""

from __future__ import annotations

import pytest

from moderation.devtools.devstack import TritonPorts
from moderation.devtools.processes import free_port
from moderation.serving import liveness


@pytest.mark.slow
@pytest.mark.integration
def test_live_when_both_models_answer(triton_demo_ports: TritonPorts) -> None:
    assert liveness.main(["--url", f"http://127.0.0.1:{triton_demo_ports.http}"]) == 0


def test_not_live_when_nothing_answers(capsys: pytest.CaptureFixture[str]) -> None:
    assert liveness.main(["--url", f"http://127.0.0.1:{free_port()}", "--timeout", "1"]) == 1
    assert "not live" in capsys.readouterr().err
