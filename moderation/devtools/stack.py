"""``moderation dev up|down|status|env``: the embedded stack, tracked in a state directory.

State lives in ``<state_dir>/stack.json`` (ports and PIDs) next to each service's log, so
the commands work from any working directory and a second ``up`` is a no-op.
Services: the Tansu Kafka-protocol broker (``kafka``), ``redis-server`` (``redis``) and
``tritonserver`` serving ``triton_models/cpu`` with the configured bundle (``triton``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moderation.config import Settings
from moderation.devtools import devstack, processes
from moderation.edges.net import port_open
from moderation.serving.triton_backend import BUNDLE_ENV

SERVICES = ("kafka", "redis", "triton")


def _state_file(settings: Settings) -> Path:
    return settings.dev.state_dir / "stack.json"


def read_state(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(_state_file(settings).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_state(settings: Settings, state: dict[str, Any]) -> None:
    settings.dev.state_dir.mkdir(parents=True, exist_ok=True)
    _state_file(settings).write_text(json.dumps(state, indent=2) + "\n")


def healthy(name: str, state: dict[str, Any]) -> bool:
    s = state.get(name)
    if not s or not processes._pid_alive(int(s["pid"])):
        return False
    if name == "triton":
        return processes.http_ok(f"http://127.0.0.1:{s['http']}/v2/health/ready")
    return port_open(int(s["port"]))


def _start(name: str, settings: Settings) -> dict[str, Any]:
    state_dir = settings.dev.state_dir
    if name == "kafka":
        proc, port = devstack.start_tansu(state_dir)
        return {"pid": proc.pid, "port": port, "log": str(proc.log_path)}
    if name == "redis":
        proc, port = devstack.start_redis(state_dir)
        return {"pid": proc.pid, "port": port, "log": str(proc.log_path)}
    repo = settings.dev.model_repository or devstack.DEFAULT_MODEL_REPOSITORY
    proc, ports = devstack.start_triton(state_dir, repo,
                                        env={BUNDLE_ENV: settings.model.bundle})
    return {"pid": proc.pid, "http": ports.http, "grpc": ports.grpc, "metrics": ports.metrics,
            "log": str(proc.log_path), "bundle": settings.model.bundle}


def up(settings: Settings) -> dict[str, Any]:
    """Start whatever is not already running and healthy."""
    state = read_state(settings)
    for name in SERVICES:
        if healthy(name, state):
            continue
        if state.get(name):
            processes.stop_pid(int(state[name]["pid"]))
        state[name] = _start(name, settings)
        _write_state(settings, state)
    return state


def down(settings: Settings) -> None:
    state = read_state(settings)
    for name in reversed(SERVICES):
        if state.get(name):
            processes.stop_pid(int(state[name]["pid"]))
    for pid_file in settings.dev.state_dir.glob("*.pid"):
        pid_file.unlink(missing_ok=True)
    _state_file(settings).unlink(missing_ok=True)


def env(state: dict[str, Any]) -> dict[str, str]:
    """The MODERATION_* settings a client needs to use the running stack."""
    out = {}
    if state.get("kafka"):
        out["MODERATION_KAFKA__BOOTSTRAP_SERVERS"] = f"127.0.0.1:{state['kafka']['port']}"
    if state.get("redis"):
        out["MODERATION_REDIS__URL"] = f"redis://127.0.0.1:{state['redis']['port']}/0"
    if state.get("triton"):
        t = state["triton"]
        out["MODERATION_TRITON__URL"] = f"127.0.0.1:{t['grpc']}"
        out["MODERATION_MODEL__BUNDLE"] = str(t["bundle"])
    return out


def env_lines(state: dict[str, Any]) -> list[str]:
    return [f"export {k}={v}" for k, v in env(state).items()]


def _describe(name: str, s: dict[str, Any]) -> str:
    if name == "triton":
        return (f"pid={s['pid']}  grpc=127.0.0.1:{s['grpc']}  http=127.0.0.1:{s['http']}  "
                f"metrics=127.0.0.1:{s['metrics']}  log={s['log']}")
    return f"pid={s['pid']}  127.0.0.1:{s['port']}  log={s['log']}"


def run(action: str, settings: Settings) -> int:
    if action == "up":
        state = up(settings)
        for name in SERVICES:
            print(f"{name:<7} {_describe(name, state[name])}")
        return 0
    if action == "down":
        down(settings)
        print("stopped")
        return 0
    state = read_state(settings)
    if action == "env":
        if not state:
            print("# the stack is not running: moderation dev up")
            return 1
        print("\n".join(env_lines(state)))
        return 0
    ok = True
    for name in SERVICES:
        good = healthy(name, state)
        ok = ok and good
        detail = _describe(name, state[name]) if state.get(name) else ""
        print(f"{name:<7} {'ready' if good else 'down':<6} {detail}")
    return 0 if ok else 1
