#!/usr/bin/env python3
"""Writes helm/moderation/values.schema.json. Its ``config`` part comes from the service's
settings (moderation/config.py), so every MODERATION_* setting is settable and a misspelt
one fails at ``helm lint``/install with its name; secrets (SecretStr) are left out: they
come only from existingSecret. tests/deploy/test_chart.py keeps the file current."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from moderation.config import Settings

OUT = Path(__file__).resolve().parents[1] / "helm" / "moderation" / "values.schema.json"
DEV_ONLY = {"dev", "faults"}  # the embedded stack and test-only fault injection


def _setting(prop: dict[str, Any]) -> dict[str, Any]:
    keep = {k: v for k, v in prop.items() if k not in ("default", "title")}
    if "anyOf" in keep:
        keep["anyOf"] = [_setting(p) for p in keep["anyOf"]]
    return keep


def _secret(prop: dict[str, Any], defs: dict[str, Any]) -> bool:
    """A SecretStr, or a list of models holding one (the console's tokens)."""
    text = json.dumps(prop)
    for ref in re.findall(r'"#/\$defs/(\w+)"', text):
        text += json.dumps(defs[ref])
    return '"format": "password"' in text


def config_schema() -> dict[str, Any]:
    full = Settings.model_json_schema()
    sections = {}
    for name, ref in full["properties"].items():
        if name in DEV_ONLY:
            continue
        section = full["$defs"][ref["$ref"].rsplit("/", 1)[-1]]
        props = {k: _setting(v) for k, v in section["properties"].items()
                 if not _secret(v, full["$defs"])}
        sections[name] = {"type": "object", "additionalProperties": False,
                          "description": section.get("description", ""), "properties": props}
    return {"type": "object", "additionalProperties": False, "properties": sections}


def obj(props: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": props, **extra}


STR = {"type": "string"}
BOOL = {"type": "boolean"}
MAP = {"type": "object"}
LIST = {"type": "array"}
POS = {"type": "integer", "minimum": 1}
NONNEG = {"type": "integer", "minimum": 0}
IMAGE = obj({"repository": {"type": "string", "minLength": 1}, "tag": STR,
             "pullPolicy": {"enum": ["Always", "IfNotPresent", "Never"]}})
RESOURCES = obj({"requests": MAP, "limits": MAP, "claims": LIST})
PORTS = {"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 65535}}


def schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "moderation chart values",
        **obj({
            "nameOverride": STR, "fullnameOverride": STR,
            "config": config_schema(),
            "existingSecret": STR,
            "secretKeys": obj({"kafkaSaslPassword": STR, "redisPassword": STR,
                               "consoleTokens": STR}),
            "console": obj({"enabled": BOOL, "replicas": NONNEG, "resources": RESOURCES,
                            "port": {"type": "integer", "minimum": 1, "maximum": 65535}}),
            "worker": obj({
                "image": IMAGE, "replicas": NONNEG, "inputPartitions": POS,
                "terminationGracePeriodSeconds": {"type": ["integer", "null"], "minimum": 1},
                "resources": RESOURCES,
                "podDisruptionBudget": obj({"enabled": BOOL, "maxUnavailable": {
                    "type": ["integer", "string"]}}),
                "topologySpread": BOOL, "podAnnotations": MAP, "nodeSelector": MAP,
                "tolerations": LIST, "affinity": MAP}),
            "triton": obj({
                "enabled": BOOL, "gpu": BOOL, "image": IMAGE, "gpuImage": IMAGE,
                "replicas": NONNEG, "gpusPerReplica": POS, "resources": RESOURCES,
                "modelRepositoryVolume": {"type": ["object", "null"]},
                "startupSeconds": {"type": "integer", "minimum": 10},
                "nodeSelector": MAP, "tolerations": LIST, "affinity": MAP}),
            "autoscaling": obj({
                "enabled": BOOL, "keda": BOOL, "minReplicas": POS, "maxReplicas": POS,
                "lagPerReplica": POS,
                "targetCPUUtilizationPercentage": {"type": "integer", "minimum": 1,
                                                   "maximum": 100}}),
            "metrics": obj({
                "serviceMonitor": obj({"enabled": BOOL, "interval": STR, "labels": MAP}),
                "prometheusRule": obj({"enabled": BOOL, "labels": MAP}),
                "dashboard": obj({"enabled": BOOL, "labels": MAP})}),
            "alerts": obj({
                "lagMinimum": NONNEG,
                "deadLetterRatio": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                "endToEndP99Seconds": {"type": "number", "exclusiveMinimum": 0},
                "tritonErrorsPerSecond": {"type": "number", "minimum": 0}}),
            "networkPolicy": obj({
                "enabled": BOOL, "kafkaPorts": PORTS, "redisPorts": PORTS,
                "console": obj({"from": LIST}),
                "prometheus": obj({"namespaceSelector": MAP, "podSelector": MAP})}),
            "policies": obj({"job": obj({"enabled": BOOL}),
                             "files": {"type": "object", "additionalProperties": STR}}),
            "tests": obj({"enabled": BOOL, "timeoutSeconds": POS}),
        }),
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(schema(), indent=2) + "\n")
    print(f"wrote {OUT}")
