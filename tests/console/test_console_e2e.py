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

    def wait_indexed(self, ids: set[str]) -> None:
        """Until the recent index has these uploads (written right after their decisions)."""
        def indexed() -> bool:
            return ids <= {r["upload_id"] for r in self.call("GET", "/api/recent?limit=1000")}
        wait_until(indexed, self.console, 30, "indexed the uploads")

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
    live.wait_indexed({f"a-{p.stem}" for p in SAMPLES})

    draft = [{**p, "threshold": 0.2} if p["name"] == "weapons" else p
             for p in start["policies"]]
    draft += [{"name": "cats_watch", "action": "shadow", "threshold": 0.3,
               "prompts": ["a cat", "a cat face"]},
              {"name": "dogs_review", "action": "review", "threshold": 0.3,
               "prompts": ["a dog", "a dog face"]}]
    report = live.call("POST", "/api/policies/backtest",
                       {"policies": draft, "last": len(SAMPLES)})
    assert {u["upload_id"][:2] for u in report["newly_flagged"]} == {"a-"}
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


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Debian's headless Chromium through chromium-driver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--window-size=1280,1500", "--hide-scrollbars",
                 f"--user-data-dir={tmp_path / 'profile'}"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    driver.implicitly_wait(0)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_page_edits_backtests_applies_and_rolls_back(live: Live, browser: Any,
                                                         tmp_path: Path) -> None:
    """Screenshots go to $MODERATION_SCREENSHOTS (the README's come from here: docs/console)."""
    import os

    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    shots = Path(os.environ.get("MODERATION_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    wait = WebDriverWait(browser, 60)

    def shot(name: str) -> None:
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1280, min(max(height, 800), 2400))
        assert browser.save_screenshot(str(shots / f"{name}.png"))
        browser.set_window_size(1280, 1500)

    live.wait_indexed({f"page-{p.stem}" for p in SAMPLES} & {
        f"page-{k}" for k in live.moderate("page")})  # recent uploads to look at
    start = live.call("GET", "/api/policies")["version"]
    browser.get(live.url + "/")
    wait.until(ec.presence_of_element_located((By.ID, "token")))  # sent to the login form
    browser.find_element(By.ID, "token").send_keys(TOKENS["ed"][1])
    browser.find_element(By.ID, "sign-in").click()
    wait.until(ec.presence_of_element_located((By.ID, "current")))
    assert browser.find_element(By.ID, "who").text == "ed · editor"
    assert f"version {start}" in browser.find_element(By.ID, "current-version").text
    shot("policies")

    name = browser.find_element(By.CSS_SELECTOR, "input[value='weapons'][name$='-name']")
    card = name.get_attribute("name").removesuffix("-name")
    browser.find_element(By.CSS_SELECTOR, f"#{card} summary").click()  # open its card
    threshold = browser.find_element(By.NAME, f"{card}-threshold")
    threshold.clear()
    threshold.send_keys("0.2")
    browser.find_element(By.ID, "backtest").click()
    wait.until(ec.presence_of_element_located((By.ID, "report")))
    assert int(browser.find_element(By.ID, "newly-count").text) > 0
    slider = browser.find_element(By.ID, "slider-weapons")
    browser.execute_script("arguments[0].value = 0.3; arguments[0].dispatchEvent("
                           "new Event('input'))", slider)
    assert browser.find_element(By.ID, "sweep-weapons").text.startswith("0.30 → ")
    shot("backtest")

    browser.find_element(By.ID, "message").send_keys("weapons: catch more")
    browser.find_element(By.ID, "apply").click()
    notice = wait.until(ec.presence_of_element_located((By.ID, "notice"))).text
    applied = int(notice.split("version ")[1].split(".")[0])
    live.wait_version(applied)  # the worker reports the new version

    browser.get(live.url + "/history")
    row = wait.until(ec.presence_of_element_located((By.ID, f"v{applied}")))
    assert "console:ed" in row.text and "weapons: catch more" in row.text
    assert "threshold" in row.text  # the diff against the version before
    shot("history")
    browser.find_element(By.ID, f"rollback-{start}").click()
    notice = wait.until(ec.presence_of_element_located((By.ID, "notice"))).text
    restored = int(notice.split("as version ")[1].split(".")[0])
    live.wait_version(restored)
    assert live.call("GET", "/api/policies/history")[0]["rollback_of"] == start

    browser.get(live.url + "/search")
    browser.find_element(By.ID, "q").send_keys("a pistol or handgun")
    browser.find_element(By.ID, "search").click()
    tiles = wait.until(ec.presence_of_all_elements_located((By.CSS_SELECTOR, "li.tile")))
    assert "pistol" in tiles[0].get_attribute("data-upload") + tiles[1].get_attribute(
        "data-upload") + tiles[2].get_attribute("data-upload")
    wait.until(lambda d: d.execute_script(  # thumbnails loaded
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
    shot("search")
