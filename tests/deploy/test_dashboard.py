"""The Grafana dashboard against a real Prometheus (Debian's package) that scrapes a real
worker and Triton while uploads go through: every panel's query returns data, and every
metric it names exists."""

from __future__ import annotations

import json
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from moderation.config import Settings
from moderation.devtools.devstack import TritonPorts, start_worker, wait_for_partitions
from moderation.devtools.processes import ManagedProcess, free_port, http_ok, spawn, wait_until
from moderation.devtools.provision import provision
from tests.deploy.chart import CHART, REPO
from tests.pipeline_helpers import event, produce, read_outcomes, worker_env

DASHBOARD = json.loads((CHART / "files" / "dashboard.json").read_text())
METRIC = re.compile(r"\b((?:moderation|nv_inference)_[a-z_]+)\b")


def queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"].replace("$__rate_interval", "1m"))
            for p in DASHBOARD["panels"] for t in p["targets"]]


def test_the_dashboard_covers_what_ops_asked_for() -> None:
    titles = " / ".join(p["title"] for p in DASHBOARD["panels"]).lower()
    for subject in ("decisions", "flag rate", "dead letters", "lag", "end to end", "stage",
                    "batch size", "in flight", "policy version", "ready", "triton queue",
                    "triton compute"):
        assert subject in titles, subject
    names = {m for _, q in queries() for m in METRIC.findall(q)}
    assert {"nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"} <= names


class Prometheus:
    def __init__(self, port: int, proc: ManagedProcess) -> None:
        self.port, self.proc = port, proc

    def get(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = json.loads(resp.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[Any]:
        return list(self.get("/api/v1/query", query=expr)["result"])


@pytest.fixture(scope="module")
def scraped_run(kafka_bootstrap: str, redis_url: str, triton_demo: str,
                triton_demo_ports: TritonPorts, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[Prometheus]:
    """A worker deciding uploads (flagged, allowed, one dead letter) while Prometheus
    scrapes it and Triton every second."""
    env = worker_env(kafka_bootstrap, redis_url, triton_demo, "dashboard")
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    tmp = tmp_path_factory.mktemp("dashboard")
    settings = Settings()
    provision(settings, REPO / "policies")
    worker, worker_port = start_worker(tmp, env)
    prom_port = free_port()
    config = tmp / "prometheus.yml"
    config.write_text(json.dumps({  # JSON is YAML
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": "moderation-worker",
             "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
            {"job_name": "triton",
             "static_configs": [{"targets": [f"127.0.0.1:{triton_demo_ports.metrics}"]}]}]}))
    prom = spawn("prometheus", ["prometheus", f"--config.file={config}",
                                f"--storage.tsdb.path={tmp / 'tsdb'}",
                                f"--web.listen-address=127.0.0.1:{prom_port}"], tmp, {})
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{prom_port}/-/ready"), prom, 60, "ready")
        prometheus = Prometheus(prom_port, prom)
        wait_for_partitions(worker, worker_port, 60)
        samples = [REPO / "samples" / n for n in ("pistol.png", "dog.png", "beer.jpg",
                                                  "kitchen_knife.png")]
        items = [(f"{p.stem}-{i}", event(f"{p.stem}-{i}", p.read_bytes()), [])
                 for i in range(3) for p in samples]
        items.append(("broken", event("broken", b"\x89PNG\r\n\x1a\n broken"), []))
        produce(settings, items)
        outcomes = read_outcomes(settings, {k for k, _, _ in items if k})
        assert len(outcomes) == len(items)
        # synchronise on Prometheus: it has seen the run finished, then scraped both
        # targets twice more (rates need two samples of every series)
        deadline = time.monotonic() + 60

        def scrapes() -> dict[str, float]:
            return {r["metric"]["job"]: float(r["value"][1])
                    for r in prometheus.query("count_over_time(up[5m])")}

        while True:
            got = prometheus.query("sum(moderation_messages_total)")
            if got and float(got[0]["value"][1]) == len(items):
                break
            assert time.monotonic() < deadline, "Prometheus never saw every upload settled"
            time.sleep(0.5)  # polls Prometheus for the condition
        seen = scrapes()  # a target not scraped yet has no count: 0
        jobs = ("moderation-worker", "triton")
        while not all((now := scrapes()).get(job, 0) >= seen.get(job, 0) + 2 for job in jobs):
            assert time.monotonic() < deadline, f"Prometheus stopped scraping: {now}"
            time.sleep(0.5)  # polls Prometheus for the condition
        yield prometheus
    finally:
        prom.stop()
        worker.stop()
        mp.undo()


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.parametrize(("title", "expr"), queries(), ids=[f"{t}:{e[:40]}" for t, e in queries()])
def test_every_panel_query_returns_data(scraped_run: Prometheus, title: str, expr: str) -> None:
    assert scraped_run.query(expr), f"{title}: no data for {expr}"


@pytest.mark.slow
@pytest.mark.integration
def test_every_metric_the_dashboard_names_exists(scraped_run: Prometheus) -> None:
    known = set(scraped_run.get("/api/v1/label/__name__/values"))
    names = {m for _, q in queries() for m in METRIC.findall(q)}
    assert names - known == set()
    flagged = scraped_run.query('sum by (policy) (moderation_flags_total{policy="weapons"})')
    assert flagged and float(flagged[0]["value"][1]) >= 3  # the run really flagged uploads
    dead = scraped_run.query("sum(moderation_dead_letters_total)")
    assert dead and float(dead[0]["value"][1]) == 1  # the broken image
