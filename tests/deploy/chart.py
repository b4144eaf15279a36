"""Rendering the Helm chart for the deploy tests (helm-python-sdk: Helm v4 as a library)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "moderation"
CRDS = Path(__file__).resolve().parent / "crd_schemas"

# value sets every check runs on
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "cpu": {"triton": {"gpu": False, "replicas": 2}, "worker": {"replicas": 4}},
    "gpu": {"triton": {"gpu": True, "modelRepositoryVolume": {
        "persistentVolumeClaim": {"claimName": "trt-repository"}}}},
    "keda-prometheus-operator": {
        "autoscaling": {"enabled": True, "keda": True, "minReplicas": 2, "maxReplicas": 12},
        "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "kube-prom"}},
                    "prometheusRule": {"enabled": True}, "dashboard": {"enabled": True}}},
    "hpa": {"autoscaling": {"enabled": True, "maxReplicas": 6}},
    "existing-secret": {
        "existingSecret": "moderation-secrets",
        "config": {"kafka": {"bootstrap_servers": "kafka-0.kafka:9093",
                             "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
                             "sasl_username": "moderation"},
                   "redis": {"url": "rediss://redis.cache:6380/0"},
                   "fetch": {"allowed_hosts": ["*.cdn.example.com"]}}},
}


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object the chart renders with ``values`` (NOTES.txt aside)."""
    import helm_python as helm

    chart = helm.Chart.load(str(CHART))
    out = chart.render(values, name="mod", namespace="trust", is_install=True)
    return [doc for path, text in sorted(out.items()) if not path.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def crd_schema(api_version: str, kind: str) -> dict[str, Any] | None:
    group, _, version = api_version.partition("/")
    path = CRDS / f"{kind.lower()}-{group}-{version}.json"
    return json.loads(path.read_text()) if path.exists() else None


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    specs = []
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            specs.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            specs.append((o["metadata"]["name"], o["spec"]))
    return specs


def container(objects: list[dict[str, Any]], deployment_suffix: str) -> dict[str, Any]:
    (dep,) = [o for o in of_kind(objects, "Deployment")
              if o["metadata"]["name"].endswith(deployment_suffix)]
    return dict(dep["spec"]["template"]["spec"]["containers"][0])
