#!/usr/bin/env python3
"""Writes helm/moderation/files/dashboard.json, the Grafana dashboard the chart ships
(tests/deploy/test_dashboard.py keeps the file current and runs every query against a
real Prometheus)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "helm" / "moderation" / "files" / "dashboard.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
R = "$__rate_interval"

# (title, unit, [(expr, legend)]), laid out two per row
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("Decisions per second", "reqps", [
        (f"sum by (decision) (rate(moderation_decisions_total[{R}]))", "{{decision}}")]),
    ("Flag rate by policy", "percentunit", [
        (f"sum by (policy) (rate(moderation_flags_total[{R}])) / ignoring (policy) group_left "
         f"sum(rate(moderation_decisions_total[{R}]))", "{{policy}}")]),
    ("Dead letters by error type", "reqps", [
        (f"sum by (error_type) (rate(moderation_dead_letters_total[{R}]))", "{{error_type}}")]),
    ("Consumer lag by partition", "short", [
        ("sum by (topic, partition) (moderation_consumer_lag)", "{{topic}}/{{partition}}")]),
    ("End to end, upload to decision", "s", [
        (f"histogram_quantile({q}, sum by (le) (rate(moderation_end_to_end_seconds_bucket[{R}])))",
         f"p{int(q * 100)}") for q in (0.5, 0.95, 0.99)]),
    ("Time per stage (mean per batch)", "s", [
        (f"sum by (stage) (rate(moderation_stage_seconds_sum[{R}])) / "
         f"sum by (stage) (rate(moderation_stage_seconds_count[{R}]))", "{{stage}}")]),
    ("Batch size (mean images per Triton request)", "short", [
        (f"sum(rate(moderation_batch_size_sum[{R}])) / sum(rate(moderation_batch_size_count[{R}]))",
         "images")]),
    ("In flight (polled, not yet settled)", "short", [
        ("sum by (instance) (moderation_in_flight_messages)", "{{instance}}")]),
    ("Policy version per worker", "none", [
        ("max by (instance) (moderation_policy_version)", "{{instance}}")]),
    ("Workers ready", "short", [
        ("sum(moderation_ready)", "ready"), ("count(moderation_ready)", "workers")]),
    ("Triton queue time per request", "µs", [
        (f"sum by (model) (rate(nv_inference_queue_duration_us[{R}])) / "
         f"sum by (model) (rate(nv_inference_request_success[{R}]))", "{{model}}")]),
    ("Triton compute time per request", "µs", [
        (f"sum by (model) (rate(nv_inference_compute_infer_duration_us[{R}])) / "
         f"sum by (model) (rate(nv_inference_request_success[{R}]))", "{{model}}")]),
    ("Triton calls failing (worker side)", "reqps", [
        (f"sum by (kind) (rate(moderation_triton_errors_total[{R}]))", "{{kind}}")]),
    ("Offset commits", "reqps", [
        (f"sum by (result) (rate(moderation_offset_commits_total[{R}]))", "{{result}}")]),
]


def panel(i: int, title: str, unit: str, targets: list[tuple[str, str]]) -> dict[str, Any]:
    return {
        "id": i + 1, "type": "timeseries", "title": title, "datasource": DS,
        "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom"}},
        "targets": [{"refId": chr(ord("A") + j), "datasource": DS, "expr": expr,
                     "legendFormat": legend} for j, (expr, legend) in enumerate(targets)],
    }


def dashboard() -> dict[str, Any]:
    return {
        "uid": "moderation", "title": "Moderation", "tags": ["moderation"],
        "timezone": "browser", "schemaVersion": 39, "version": 1, "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "datasource", "type": "datasource",
                                 "query": "prometheus", "label": "Prometheus"}]},
        "panels": [panel(i, *p) for i, p in enumerate(PANELS)],
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {OUT}")
