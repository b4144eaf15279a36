"""``moderation dev up|down|status|env``: the embedded stack, tracked in a state directory.

State lives in ``<state_dir>/stack.json`` (ports and PIDs) next to each service's log, so
the commands work from any working directory and a second ``up`` is a no-op.
Services today: ``tritonserver`` serving ``triton_models/cpu`` with the configured bundle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from moderation import devstack
from moderation.config import Settings
from moderation.triton_backend import BUNDLE_ENV


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


def triton_healthy(state: dict[str, Any]) -> bool:
    t = state.get("triton")
    if not t:
        return False
    return devstack.http_ok(f"http://127.0.0.1:{t['http']}/v2/health/ready")


def up(settings: Settings) -> dict[str, Any]:
    state = read_state(settings)
    if triton_healthy(state):
        return state
    if state.get("triton"):
        devstack.stop_pid(int(state["triton"]["pid"]))
    repo = settings.dev.model_repository or devstack.DEFAULT_MODEL_REPOSITORY
    proc, ports = devstack.start_triton(settings.dev.state_dir, repo,
                                        env={BUNDLE_ENV: settings.model.bundle})
    state["triton"] = {"pid": proc.pid, "http": ports.http, "grpc": ports.grpc,
                       "metrics": ports.metrics, "log": str(proc.log_path),
                       "bundle": settings.model.bundle}
    _write_state(settings, state)
    return state


def down(settings: Settings) -> None:
    state = read_state(settings)
    for name in ("triton",):
        if state.get(name):
            devstack.stop_pid(int(state[name]["pid"]))
            (settings.dev.state_dir / "tritonserver.pid").unlink(missing_ok=True)
    _state_file(settings).unlink(missing_ok=True)


def env_lines(state: dict[str, Any]) -> list[str]:
    t = state.get("triton")
    if not t:
        return []
    return [f"export MODERATION_TRITON__URL=127.0.0.1:{t['grpc']}",
            f"export MODERATION_MODEL__BUNDLE={t['bundle']}"]


def run(action: str, settings: Settings) -> int:
    if action == "up":
        state = up(settings)
        t = state["triton"]
        print(f"triton  pid={t['pid']}  grpc=127.0.0.1:{t['grpc']}  http=127.0.0.1:{t['http']}"
              f"  metrics=127.0.0.1:{t['metrics']}  log={t['log']}")
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
    healthy = triton_healthy(state)
    print(f"triton  {'ready' if healthy else 'down'}  {json.dumps(state.get('triton', {}))}")
    return 0 if healthy else 1
