"""The service's images run with buildah (chroot isolation, host network): how the dev
tooling starts Triton and a worker from what ``make image`` builds, without a container
engine. ``moderation demo --images`` and the container smoke test use it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from moderation.contract.errors import ConfigError
from moderation.devtools.processes import ManagedProcess, spawn

VERSION = "0.1.0"
WORKER_IMAGE = f"localhost/moderation-worker:{VERSION}"
TRITON_CPU_IMAGE = f"localhost/moderation-triton-cpu:{VERSION}"


def _buildah(*args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(["buildah", *args], capture_output=True, text=True, timeout=120)
    except FileNotFoundError as exc:
        raise ConfigError("buildah is not installed: apt-get install buildah") from exc


def image_exists(image: str) -> bool:
    return _buildah("inspect", "--type", "image", image).returncode == 0


def require_images(*images: str) -> None:
    missing = [i for i in images if not image_exists(i)]
    if missing:
        raise ConfigError(f"no image {', '.join(missing)}: build them with make image")


def _container(image: str) -> str:
    made = _buildah("from", "--pull=never", "--quiet", image)
    if made.returncode != 0:
        raise ConfigError(f"cannot create a container from {image}: {made.stderr.strip()}")
    return made.stdout.strip().splitlines()[-1]


def _run_args(container: str, command: Sequence[str], env: Mapping[str, str],
              volumes: Sequence[str]) -> list[str]:
    return ["buildah", "run", "--isolation", "chroot", "--network", "host",
            *(f"--env={k}={v}" for k, v in env.items()),
            *(f"--volume={v}" for v in volumes), container, "--", *command]


@dataclass
class ContainerProcess(ManagedProcess):
    """A command running in its own working container; stopping it removes the container."""

    container: str = ""

    def stop(self, grace_s: float = 15.0) -> None:
        super().stop(grace_s)
        _buildah("rm", self.container)


def start_in_image(name: str, image: str, command: Sequence[str], state_dir: Path,
                   env: Mapping[str, str] | None = None, volumes: Sequence[str] = ()
                   ) -> ContainerProcess:
    """``command`` inside ``image`` in the background, as the image's user."""
    container = _container(image)
    proc = spawn(name, _run_args(container, command, env or {}, volumes), state_dir.resolve(),
                 dict(os.environ))
    return ContainerProcess(proc.name, proc.pid, proc.log_path, proc.pid_path, container)


def run_in_image(image: str, command: Sequence[str], env: Mapping[str, str] | None = None,
                 volumes: Sequence[str] = (), timeout_s: float = 300.0) -> str:
    """``command`` inside ``image`` to completion; its output, or ConfigError on failure."""
    container = _container(image)
    try:
        done = subprocess.run(_run_args(container, command, env or {}, volumes),
                              capture_output=True, text=True, timeout=timeout_s)
    finally:
        _buildah("rm", container)
    if done.returncode != 0:
        raise ConfigError(f"{' '.join(command)} in {image} failed ({done.returncode}):\n"
                          f"{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return done.stdout
