"""The Helm chart, checked for real: helm lint and render (Helm v4 as a library) on several
value sets, every object validated against the Kubernetes 1.30 schemas or its CRD's, and
what matters asserted: probes, security contexts, secrets only by reference, GPUs only on
GPU, never more workers than partitions."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from moderation.config import Settings
from tests.deploy.chart import (
    CHART,
    REPO,
    VALUE_SETS,
    container,
    crd_schema,
    of_kind,
    pod_specs,
    render,
)

SECRETISH = re.compile(r"PASSWORD|TOKEN|SECRET", re.IGNORECASE)


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_lint_passes_with_nothing_above_info(name: str) -> None:
    import helm_python as helm

    report = helm.lint(str(CHART), VALUE_SETS[name], strict=True, kube_version="v1.30.0")
    assert not report["errors"], report
    assert all(m["severity"] <= 1 for m in report["messages"]), report["messages"]


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_object_is_valid_for_kubernetes_1_30_or_its_crd(name: str) -> None:
    objects = render(VALUE_SETS[name])
    assert objects
    for obj in objects:
        schema = crd_schema(obj["apiVersion"], obj["kind"])
        if schema is not None:  # OpenAPI v3 (draft-4 like) with Go regexes: no metaschema check
            errors = [e.message for e in jsonschema.Draft4Validator(schema).iter_errors(obj)]
            assert not errors, (obj["kind"], errors)
        else:
            kubernetes_validate.validate(obj, "1.30.0", strict=True)


def test_the_value_sets_render_what_they_turn_on() -> None:
    kinds = {name: sorted({o["kind"] for o in render(v)}) for name, v in VALUE_SETS.items()}
    assert "ScaledObject" not in kinds["defaults"] and "HorizontalPodAutoscaler" in kinds["hpa"]
    assert {"ScaledObject", "ServiceMonitor", "PrometheusRule", "ConfigMap"} <= set(
        kinds["keda-prometheus-operator"])
    assert {"Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy", "Job",
            "ConfigMap"} <= set(kinds["defaults"])


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_probes(name: str) -> None:
    objects = render(VALUE_SETS[name])
    worker = container(objects, "-worker")
    assert worker["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert worker["readinessProbe"]["httpGet"]["path"] == "/readyz"
    triton = container(objects, "-triton")
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["startupProbe"]["failureThreshold"] * triton["startupProbe"][
        "periodSeconds"] >= 600
    live = triton["livenessProbe"]
    if VALUE_SETS[name].get("triton", {}).get("gpu"):
        assert live["httpGet"]["path"] == "/v2/health/live"
    else:  # a real inference: the python backend says live with a dead stub
        assert live["exec"]["command"][:3] == ["python", "-m", "moderation.serving.liveness"]
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_every_pod_runs_locked_down(name: str) -> None:
    for pod_name, spec in pod_specs(render(VALUE_SETS[name])):
        assert spec["securityContext"]["runAsNonRoot"] is True, pod_name
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", pod_name
        assert spec["automountServiceAccountToken"] is False, pod_name
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"], pod_name
            assert sc["allowPrivilegeEscalation"] is False, pod_name
            assert sc["capabilities"]["drop"] == ["ALL"], pod_name
            assert sc["seccompProfile"]["type"] == "RuntimeDefault", pod_name
            assert c["resources"].get("limits", {}).get("memory"), pod_name


@pytest.mark.parametrize("name", list(VALUE_SETS))
def test_secrets_come_only_from_the_existing_secret(name: str) -> None:
    values = VALUE_SETS[name]
    for pod_name, spec in pod_specs(render(values)):
        for c in spec["containers"]:
            env = c.get("env", [])
            if not env:
                continue  # Triton: no settings, no secrets
            secretish = [e for e in env if SECRETISH.search(e["name"])]
            for e in secretish:
                assert "value" not in e, (pod_name, e)
                assert e["valueFrom"]["secretKeyRef"]["name"] == values["existingSecret"]
            assert bool(secretish) == bool(values.get("existingSecret")), pod_name


def test_secrets_cannot_be_given_as_plain_values() -> None:
    import helm_python as helm

    chart = helm.Chart.load(str(CHART))
    for bad in ({"config": {"kafka": {"sasl_password": "hunter2"}}},
                {"config": {"redis": {"password": "hunter2"}}}):
        with pytest.raises(helm.HelmError, match="password"):
            chart.render(bad, name="mod", namespace="trust")


def test_the_gpu_is_requested_only_on_gpu() -> None:
    for name, values in VALUE_SETS.items():
        triton = container(render(values), "-triton")
        gpu = values.get("triton", {}).get("gpu", False)
        assert ("nvidia.com/gpu" in triton["resources"].get("limits", {})) == gpu, name
        assert ("moderation-triton-gpu" in triton["image"]) == gpu, name
    (dep,) = [d for d in of_kind(render(VALUE_SETS["gpu"]), "Deployment")
              if d["metadata"]["name"].endswith("-triton")]
    spec = dep["spec"]["template"]["spec"]
    assert spec["nodeSelector"] and spec["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in spec["containers"][0][
        "volumeMounts"]


def test_workers_never_outnumber_the_input_partitions() -> None:
    import helm_python as helm

    for name, values in VALUE_SETS.items():
        objects = render(values)
        partitions = values.get("worker", {}).get("inputPartitions", 12)
        for o in of_kind(objects, "Deployment"):
            if o["metadata"]["name"].endswith("-worker") and "replicas" in o["spec"]:
                assert o["spec"]["replicas"] <= partitions, name
        for o in of_kind(objects, "ScaledObject"):
            assert o["spec"]["maxReplicaCount"] <= partitions
            assert o["spec"]["triggers"][0]["metadata"]["topic"] == "uploads"
        for o in of_kind(objects, "HorizontalPodAutoscaler"):
            assert o["spec"]["maxReplicas"] <= partitions
    chart = helm.Chart.load(str(CHART))
    for bad in ({"worker": {"replicas": 13}},
                {"autoscaling": {"enabled": True, "keda": True, "maxReplicas": 20}},
                {"worker": {"inputPartitions": 3}, "autoscaling": {"enabled": True,
                                                                   "maxReplicas": 4}}):
        with pytest.raises(helm.HelmError, match="inputPartitions"):
            chart.render(bad, name="mod", namespace="trust")


def test_the_grace_period_outlasts_the_drain_timeout() -> None:
    import helm_python as helm

    def grace(values: dict[str, Any]) -> int:
        (dep,) = [d for d in of_kind(render(values), "Deployment")
                  if d["metadata"]["name"].endswith("-worker")]
        return int(dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"])

    assert grace({}) > 20
    assert grace({"config": {"worker": {"drain_timeout_s": 90}}}) > 90
    assert grace({"worker": {"terminationGracePeriodSeconds": 60}}) == 60
    with pytest.raises(helm.HelmError, match="drain_timeout_s"):
        render({"worker": {"terminationGracePeriodSeconds": 10}})


@pytest.mark.parametrize(("values", "named"), [
    ({"worker": {"replicas": -1}}, "replicas"),
    ({"worker": {"replicaz": 2}}, "replicaz"),
    ({"triton": {"gpu": "yes"}}, "gpu"),
    ({"config": {"worker": {"max_in_flight": "lots"}}}, "max_in_flight"),
    ({"config": {"kafka": {"bootstrap_server": "k:9092"}}}, "bootstrap_server"),
    ({"alerts": {"deadLetterRatio": 2}}, "deadLetterRatio"),
])
def test_bad_values_fail_with_the_field_named(values: dict[str, Any], named: str) -> None:
    import helm_python as helm

    with pytest.raises(helm.HelmError, match=named):
        helm.Chart.load(str(CHART)).render(values, name="mod", namespace="trust")
    report = helm.lint(str(CHART), values)
    assert any(named in str(e) for e in [*report["errors"], *report["messages"]]), report


def test_every_setting_is_reachable_through_config() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["config"]
    fields = Settings.model_fields
    for section, info in fields.items():
        if section in ("dev", "faults"):
            assert section not in schema["properties"]
            continue
        keys = set(info.annotation.model_fields)  # type: ignore[union-attr]
        secret = {k for k in keys if "password" in k or k == "tokens"}
        assert set(schema["properties"][section]["properties"]) == keys - secret, section
    env = {e["name"]: e.get("value") for e in container(render({"config": {
        "worker": {"max_in_flight": 2000}, "fetch": {"allowed_hosts": ["a.example"]},
        "dedupe": {"enabled": False}}}), "-worker")["env"]}
    assert env["MODERATION_WORKER__MAX_IN_FLIGHT"] == "2000"
    assert env["MODERATION_FETCH__ALLOWED_HOSTS"] == '["a.example"]'
    assert env["MODERATION_DEDUPE__ENABLED"] == "false"
    assert env["MODERATION_WORKER__HTTP_HOST"] == "0.0.0.0"
    assert env["MODERATION_TRITON__URL"] == "mod-moderation-triton:8001"


def test_the_policy_job_applies_the_repository_policies() -> None:
    objects = render({})
    (cm,) = [o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"].endswith(
        "-policies")]
    repo = {p.name: p.read_text() for p in (REPO / "policies").glob("*.yaml")}
    assert {k: v.rstrip("\n") for k, v in cm["data"].items()} == {
        k: v.rstrip("\n") for k, v in repo.items()}
    jobs = {o["metadata"]["annotations"]["helm.sh/hook"]: o for o in of_kind(objects, "Job")}
    job = jobs["post-install,post-upgrade"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == [
        "policies", "apply", "/policies", "--author", "helm:mod", "--message", "helm revision 1"]
    test_job = jobs["test"]["spec"]["template"]["spec"]["containers"][0]
    assert test_job["command"][:3] == ["python", "-m", "moderation.tools.roundtrip"]


def test_the_network_policy_lets_workers_reach_only_their_services() -> None:
    policies = {o["metadata"]["name"].removeprefix("mod-moderation-"): o
                for o in of_kind(render({}), "NetworkPolicy")}
    assert set(policies) == {"clients", "triton", "console"}
    clients, triton = policies["clients"], policies["triton"]
    egress_ports = {p["port"] for rule in clients["spec"]["egress"] for p in rule["ports"]}
    assert egress_ports == {53, 9092, 6379, 8001}
    (ingress,) = clients["spec"]["ingress"]
    assert [p["port"] for p in ingress["ports"]] == [9300]
    assert "podSelector" in ingress["from"][0]
    assert {p["port"] for r in triton["spec"]["ingress"] for p in r["ports"]} == {8000, 8001,
                                                                                  8002}
    (console,) = policies["console"]["spec"]["ingress"]
    assert [p["port"] for p in console["ports"]] == [9400] and "from" not in console


def test_the_console_runs_on_the_worker_image_with_tokens_from_the_secret() -> None:
    objects = render({"existingSecret": "mod-secrets"})
    console = container(objects, "-console")
    worker = container(objects, "-worker")
    assert console["image"] == worker["image"] and console["args"] == ["console"]
    env = {e["name"]: e for e in console["env"]}
    assert env["MODERATION_CONSOLE__TOKENS"]["valueFrom"]["secretKeyRef"] == {
        "name": "mod-secrets", "key": "console-tokens", "optional": True}
    assert env["MODERATION_CONSOLE__HOST"]["value"] == "0.0.0.0"
    assert console["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert not [o for o in render({"console": {"enabled": False}})
                if o["metadata"]["name"].endswith("-console")]


@pytest.mark.parametrize("script", ["render-chart-schema.py", "render-dashboard.py",
                                    "render-alerts.py"])
def test_generated_files_are_current(script: str, tmp_path: Any) -> None:
    """The committed schema, dashboard and alert files are what their scripts write."""
    tracked = {"render-chart-schema.py": [CHART / "values.schema.json"],
               "render-dashboard.py": [CHART / "files" / "dashboard.json"],
               "render-alerts.py": [REPO / "helm" / "alerts.yml",
                                    REPO / "helm" / "alerts_test.yml"]}
    before = {p: p.read_text() for p in tracked[script]}
    try:
        subprocess.run([sys.executable, str(REPO / "scripts" / script)], check=True,
                       capture_output=True)
        for path, text in before.items():
            assert path.read_text() == text, f"{path.name} is stale: run scripts/{script}"
    finally:
        for path, text in before.items():
            path.write_text(text)
