"""`moderation dev up|status|env|down` against a real tritonserver, state in a temp dir."""

from pathlib import Path

import pytest

from moderation.cli import main
from moderation.config import Settings
from moderation.devstack import _pid_alive
from moderation.stack import read_state

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_up_is_idempotent_and_down_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MODERATION_DEV__STATE_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # works from any directory
    assert main(["dev", "up"]) == 0
    first = read_state(Settings())["triton"]
    try:
        assert main(["dev", "up"]) == 0
        assert read_state(Settings())["triton"]["pid"] == first["pid"]  # second up: no-op
        assert main(["dev", "status"]) == 0
        capsys.readouterr()
        assert main(["dev", "env"]) == 0
        env = capsys.readouterr().out
        assert f"export MODERATION_TRITON__URL=127.0.0.1:{first['grpc']}" in env
        assert (tmp_path / "tritonserver.log").exists()
    finally:
        assert main(["dev", "down"]) == 0
    assert not _pid_alive(int(first["pid"]))
    assert main(["dev", "status"]) == 1
