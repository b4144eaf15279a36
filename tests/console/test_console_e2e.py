"""The policy team's loop on real processes (Tansu, redis-server, tritonserver, a
``moderation worker`` and ``moderation console``): uploads flow into the recent index, a
draft is backtested, applied through the API, the worker's decisions after the switch are
what the backtest predicted (shadow and review policies included), and a rollback brings the
old decisions back."""

from __future__ import annotations

import json
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from moderation.config import Settings
from moderation.devtools.devstack import (
    metric_value,
    start_console,
    start_worker,
    wait_for_partitions,
)
from moderation.devtools.processes import ManagedProcess, wait_until
from moderation.devtools.provision import provision
from tests.console.conftest import TOKENS
from tests.pipeline_helpers import event, produce, read_outcomes, read_topic, worker_env

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
SAMPLES = sorted((REPO / "samples").glob("*.*"))


@dataclass
class Live:
    settings: Settings
    worker: ManagedProcess
    worker_port: int
    console: ManagedProcess
    url: str

    def call(self, method: str, path: str, body: Any = None, who: str = "ed") -> Any:
        req = urllib.request.Request(
            self.url + path, method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {TOKENS[who][1]}",
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read())

    def wait_version(self, version: int) -> None:
        """Until the worker reports it scores with ``version`` (moderation_policy_version)."""
        wait_until(lambda: metric_value(self.worker_port, "moderation_policy_version")
                   == version, self.worker, 30, f"policy version {version}")

    def moderate(self, prefix: str) -> dict[str, dict[str, Any]]:
        """Every sample as an upload ``prefix-<stem>``; returns stem -> decision."""
        items: list[tuple[str | None, bytes, list[tuple[str, bytes]]]] = [
            (f"{prefix}-{p.stem}", event(f"{prefix}-{p.stem}", p.read_bytes()), [])
            for p in SAMPLES]
        produce(self.settings, items)
        keys = {k for k, _, _ in items if k}
        outcomes = read_outcomes(self.settings, keys)
        assert outcomes.keys() == keys
        return {k.split("-", 1)[1]: v[-1][1] for k, v in outcomes.items()}


@pytest.fixture(scope="module")
def live(kafka_bootstrap: str, redis_url: str, triton_demo: str,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    tokens = [{"name": n, "role": r, "token": t} for n, (r, t) in TOKENS.items()]
    env = {**worker_env(kafka_bootstrap, redis_url, triton_demo, "console"),
           "MODERATION_RECENT__THUMBNAILS": "true",
           "MODERATION_CONSOLE__TOKENS": json.dumps(tokens),
           "MODERATION_CONSOLE__REFRESH_S": "0"}
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    settings = Settings()
    provision(settings, REPO / "policies")
    state = tmp_path_factory.mktemp(f"console-{uuid.uuid4().hex[:4]}")
    worker, port = start_worker(state, env)
    console, console_port = start_console(state, env)
    try:
        wait_for_partitions(worker, port, 60)
        yield Live(settings, worker, port, console, f"http://127.0.0.1:{console_port}")
    finally:
        console.stop()
        worker.stop()
        mp.undo()
    assert "Traceback" not in worker.log_path.read_text()
    assert "Traceback" not in console.log_path.read_text()


def flagged(decisions: dict[str, dict[str, Any]]) -> set[str]:
    return {k for k, d in decisions.items() if d["decision"] == "flag"}


def test_a_backtest_predicts_the_decisions_after_apply_and_rollback_restores(live: Live
                                                                             ) -> None:
    before = live.moderate("a")
    start = live.call("GET", "/api/policies")
    assert {d["policy_version"] for d in before.values()} == {start["version"]}
    recent = live.call("GET", "/api/recent?limit=1000")
    assert {r["upload_id"] for r in recent} >= {f"a-{p.stem}" for p in SAMPLES}

    draft = [{**p, "threshold": 0.2} if p["name"] == "weapons" else p
             for p in start["policies"]]
    draft += [{"name": "cats_watch", "action": "shadow", "threshold": 0.3,
               "prompts": ["a cat", "a cat face"]},
              {"name": "dogs_review", "action": "review", "threshold": 0.3,
               "prompts": ["a dog", "a dog face"]}]
    report = live.call("POST", "/api/policies/backtest", {"policies": draft})
    newly = {u["upload_id"].split("-", 1)[1] for u in report["newly_flagged"]}
    gone = {u["upload_id"].split("-", 1)[1] for u in report["no_longer_flagged"]}
    assert report["uploads"] == len(SAMPLES) and newly  # the draft changes something

    applied = live.call("POST", "/api/policies/apply",
                        {"policies": draft, "message": "weapons looser, cats and dogs"})
    live.wait_version(applied["version"])
    after = live.moderate("b")
    assert flagged(after) - flagged(before) == newly
    assert flagged(before) - flagged(after) == gone
    assert report["flagged_draft"] == len(flagged(after))
    # shadow: reported, never flagging; review: sent to the review topic, never flagging
    shadowed = {k for k, d in after.items() if d["shadow_flagged_policies"]}
    reviewed = {k for k, d in after.items() if d["review_policies"]}
    assert "cat_face" in shadowed and "dog" in reviewed
    for k in shadowed | reviewed:
        assert not {"cats_watch", "dogs_review"} & set(after[k]["flagged_policies"])
    cats = next(p for p in report["policies"] if p["policy"] == "cats_watch")
    assert cats["matches_draft"] == len(shadowed)
    assert report["review_draft"] == len(reviewed)
    on_review = read_topic(live.settings, live.settings.kafka.review_topic,
                           {f"b-{k}" for k in reviewed})
    assert {k.split("-", 1)[1] for k in on_review} == reviewed
    assert all(v["review_policies"] == ["dogs_review"] for v in on_review.values())

    back = live.call("POST", "/api/policies/rollback",
                     {"version": start["version"], "message": "undo"})
    live.wait_version(back["version"])
    restored = live.moderate("c")
    assert {k: d["decision"] for k, d in restored.items()} == \
        {k: d["decision"] for k, d in before.items()}
    history = live.call("GET", "/api/policies/history", who="vera")
    assert [(h["version"], h["author"], h["rollback_of"]) for h in history[:2]] == [
        (back["version"], "console:ed", start["version"]),
        (applied["version"], "console:ed", None)]
