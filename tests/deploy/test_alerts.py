"""The alerting rules: valid for Prometheus, and each alert fires on its case and stays
silent on the others (promtool, from Debian's prometheus package)."""

from __future__ import annotations

import subprocess

import yaml

from tests.deploy.chart import REPO, render

HELM = REPO / "helm"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], cwd=HELM, capture_output=True, text=True)


def test_the_plain_rules_file_is_valid() -> None:
    done = promtool("check", "rules", "alerts.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_every_alert_fires_on_its_case_and_stays_silent_otherwise() -> None:
    done = promtool("test", "rules", "alerts_test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    tests = yaml.safe_load((HELM / "alerts_test.yml").read_text())["tests"]
    alerts = {r["alert"] for r in yaml.safe_load((HELM / "alerts.yml").read_text())[
        "groups"][0]["rules"]}
    fires = {t["alert_rule_test"][0]["alertname"] for t in tests
             if t["alert_rule_test"][0]["exp_alerts"]}
    silent = {t["alert_rule_test"][0]["alertname"] for t in tests
              if not t["alert_rule_test"][0]["exp_alerts"]}
    assert fires == silent == alerts


def test_the_chart_renders_the_thresholds_from_its_values() -> None:
    (rule,) = [o for o in render({"metrics": {"prometheusRule": {"enabled": True}},
                                  "alerts": {"endToEndP99Seconds": 1.5,
                                             "deadLetterRatio": 0.2}})
               if o["kind"] == "PrometheusRule"]
    exprs = {r["alert"]: r["expr"] for r in rule["spec"]["groups"][0]["rules"]}
    assert exprs["ModerationEndToEndSLO"].rstrip().endswith("> 1.5")
    assert exprs["ModerationDeadLetterRate"].rstrip().endswith("> 0.2")
