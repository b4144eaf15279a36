"""/metrics, /healthz and /readyz over real HTTP (port 0)."""

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from moderation.edges.http_endpoints import HealthServer
from moderation.edges.metrics import Metrics


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture()
def checks() -> dict[str, bool]:
    return {"broker": True, "triton": False, "policies": True}


@pytest.fixture()
def server(checks: dict[str, bool]) -> Iterator[tuple[HealthServer, Metrics]]:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    srv = HealthServer("127.0.0.1", 0, registry, lambda: checks, lambda: True).start()
    yield srv, metrics
    srv.stop()


def test_readiness_names_the_failing_dependency(server: tuple[HealthServer, Metrics],
                                                checks: dict[str, bool]) -> None:
    srv, _ = server
    code, body = get(srv.port, "/readyz")
    assert code == 503
    assert json.loads(body) == {"status": "not ready", "checks": checks}
    checks["triton"] = True
    code, body = get(srv.port, "/readyz")
    assert code == 200 and json.loads(body)["status"] == "ready"
    assert get(srv.port, "/healthz")[0] == 200
    assert get(srv.port, "/nope")[0] == 404


def test_metrics_follow_prometheus_naming(server: tuple[HealthServer, Metrics]) -> None:
    srv, metrics = server
    metrics.decisions.labels("flag").inc()
    metrics.stage_seconds.labels("infer").observe(0.02)
    code, body = get(srv.port, "/metrics")
    text = body.decode()
    assert code == 200
    assert 'moderation_decisions_total{decision="flag"} 1.0' in text
    assert 'moderation_stage_seconds_count{stage="infer"} 1.0' in text
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        assert family.name.startswith("moderation_")
        if family.type == "counter":
            assert all(s.name.endswith(("_total", "_created")) for s in family.samples)
        if family.type == "histogram" and "seconds" not in family.name:
            assert family.name == "moderation_batch_size"  # the only unitless histogram
