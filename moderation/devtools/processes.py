"""Processes the dev tooling starts: spawned with a PID file and a log in a state directory,
stopped by PID (SIGTERM, then SIGKILL after a grace period), waited on until they answer."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from moderation.contract.errors import ConfigError

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still "exists": reap it if it is ours
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return True


def stop_pid(pid: int, grace_s: float = 15.0) -> None:
    """SIGTERM, wait up to ``grace_s``, then SIGKILL."""
    if not _pid_alive(pid):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.1)
    log.warning("pid=%d did not stop after SIGTERM, sending SIGKILL", pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def kill_pid(pid: int, sig: int = signal.SIGKILL, timeout_s: float = 10.0) -> None:
    """Send ``sig`` and wait until the process is gone (crash tests)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout_s
    while _pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


@dataclass
class ManagedProcess:
    """A started service: its PID, log and PID files."""

    name: str
    pid: int
    log_path: Path
    pid_path: Path

    def stop(self, grace_s: float = 15.0) -> None:
        stop_pid(self.pid, grace_s)
        self.pid_path.unlink(missing_ok=True)

    def alive(self) -> bool:
        return _pid_alive(self.pid)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, cmd: list[str], state_dir: Path, env: dict[str, str]) -> ManagedProcess:
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / f"{name}.log"
    pid_path = state_dir / f"{name}.pid"
    with open(log_path, "ab") as log_file:
        # cwd = the state dir, so modules lying in the caller's directory cannot shadow
        # the packages the python-backend stubs import
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=state_dir)
    pid_path.write_text(f"{proc.pid}\n")
    log.info("started name=%s pid=%d log=%s", name, proc.pid, log_path)
    return ManagedProcess(name, proc.pid, log_path, pid_path)


def http_ok(url: str, timeout_s: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until(check: Callable[[], bool], proc: ManagedProcess, timeout_s: float,
               what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        if not proc.alive():
            raise ConfigError(f"{proc.name} exited before {what}; log tail:\n{proc.log_tail()}")
        time.sleep(0.2)
    proc.stop()
    raise ConfigError(f"{proc.name} not {what} after {timeout_s:.0f}s; log tail:\n"
                      f"{proc.log_tail()}")
