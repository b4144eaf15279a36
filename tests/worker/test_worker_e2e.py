"""End to end on real processes: Tansu broker, redis-server, tritonserver (demo bundle) and
``moderation worker`` started as its own process."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from moderation.config import Settings
from moderation.core.policy import Policy, PolicySet
from moderation.devtools.devstack import metric_value, start_worker, wait_for_partitions
from moderation.devtools.processes import ManagedProcess, http_ok
from moderation.devtools.provision import provision
from moderation.edges.encoders import TritonEncoder
from moderation.edges.policy_files import load_policy_dir
from moderation.edges.policy_store import RedisPolicyStore, apply_policies
from tests.pipeline_helpers import demo_model_name, event, produce, read_outcomes, worker_env
from tests.worker import hostile_corpus as hc

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
MAX_MESSAGE = hc.MAX_MESSAGE_BYTES


@dataclass
class Pipeline:
    env: dict[str, str]
    settings: Settings
    worker: ManagedProcess
    port: int
    store: RedisPolicyStore


@pytest.fixture(scope="module", params=["confluent-kafka", "kafka-python"])
def pipeline(request: pytest.FixtureRequest, kafka_bootstrap: str, redis_url: str,
             triton_demo: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A worker with each Kafka client (the same tests hold for both)."""
    client = request.param
    env = {
        **worker_env(kafka_bootstrap, redis_url, triton_demo, f"e2e-{client}"),
        "MODERATION_KAFKA__CLIENT": client,
        "MODERATION_KAFKA__MAX_MESSAGE_BYTES": str(MAX_MESSAGE),
        "MODERATION_IMAGES__MAX_BYTES": str(hc.MAX_IMAGE_BYTES),
        "MODERATION_IMAGES__MAX_PIXELS": str(hc.MAX_PIXELS),
        "MODERATION_IMAGES__MAX_FRAMES": str(hc.MAX_FRAMES),
    }
    mp = pytest.MonkeyPatch()
    for k, v in env.items():
        mp.setenv(k, v)
    settings = Settings()
    provision(settings, REPO / "policies")
    store = RedisPolicyStore.from_settings(settings.redis)
    worker, port = start_worker(tmp_path_factory.mktemp("worker"), env)
    try:
        wait_for_partitions(worker, port, 60)
        yield Pipeline(env, settings, worker, port, store)
    finally:
        worker.stop()  # SIGTERM: drain, commit, leave the group
        mp.undo()
    log = worker.log_path.read_text()
    assert "signal SIGTERM: draining" in log and "stopped: decided=" in log
    assert "Traceback" not in log


def test_each_upload_gets_exactly_one_outcome_and_offsets_are_committed(
        pipeline: Pipeline, knife_and_dog: dict[str, Path]) -> None:
    from kafka import KafkaConsumer, TopicPartition

    knife, dog = knife_and_dog["knife"].read_bytes(), knife_and_dog["dog"].read_bytes()
    samples = sorted((REPO / "samples").glob("*.*"))[:12]
    good: list[tuple[str | None, bytes, list[tuple[str, bytes]]]] = [
        (f"s-{p.stem}", event(f"s-{p.stem}", p.read_bytes()), []) for p in samples]
    good += [(f"knife-{i}", event(f"knife-{i}", knife, surface="profile"), [])
             for i in range(3)]
    good += [(f"dog-{i}", event(f"dog-{i}", dog), []) for i in range(3)]
    good.append(("raw-knife", knife, [("upload-id", b"raw-knife")]))
    bad = {
        "bad-json": (b"{oops", "invalid_json"),
        "bad-b64": (json.dumps({"upload_id": "bad-b64", "image_b64": "***"}).encode(),
                    "invalid_base64"),
        "bad-type": (json.dumps({"upload_id": "bad-type", "image_b64": 5}).encode(),
                     "wrong_type"),
        "bad-image": (event("bad-image", b"<html>not an image</html>"), "undecodable_image"),
        "bad-cut": (event("bad-cut", knife[: len(knife) // 2]), "corrupt_image"),
        "bad-url": (json.dumps({"upload_id": "bad-url",
                                "image_url": "http://169.254.169.254/"}).encode(),
                    "url_not_allowed"),
        "bad-big": (event("bad-big", b"\xff" * (MAX_MESSAGE * 3 // 4)), "message_too_large"),
    }
    items = good + [(key, value, []) for key, (value, _) in bad.items()]
    ends = produce(pipeline.settings, items)
    keys = {key for key, _, _ in items if key}
    outcomes = read_outcomes(pipeline.settings, keys)
    assert keys == outcomes.keys(), f"missing: {keys - outcomes.keys()}"

    for key, (_, reason) in bad.items():
        [(kind, headers)] = outcomes[key]
        assert kind == "dlq" and headers["error-type"].decode() == reason, key
        assert ("value-truncated-from" in headers) == (key == "bad-big")
        assert headers["source-topic"].decode() == pipeline.settings.kafka.input_topic
    for key, _, _ in good:
        assert key is not None
        [(kind, decision)] = outcomes[key]
        assert kind == "decision" and decision["upload_id"] == key
        assert decision["model"] == demo_model_name() and decision["policy_version"] >= 1
    for i in range(3):
        assert "weapons" in outcomes[f"knife-{i}"][0][1]["flagged_policies"]
        assert outcomes[f"dog-{i}"][0][1]["decision"] == "allow"
    assert "weapons" in outcomes["raw-knife"][0][1]["flagged_policies"]

    # at-least-once bookkeeping: the group's committed offsets reach the end of each partition
    group = KafkaConsumer(**pipeline.settings.kafka.client_options(),
                          group_id=pipeline.settings.kafka.group_id, enable_auto_commit=False)
    topic = pipeline.settings.kafka.input_topic

    def committed() -> dict[int, int | None]:
        return {p: group.committed(TopicPartition(topic, p)) for p in ends}

    deadline = time.monotonic() + 30
    while committed() != ends and time.monotonic() < deadline:
        time.sleep(0.5)  # commits run every second: this polls the broker for them
    assert committed() == ends
    group.close()

    assert metric_value(pipeline.port, "moderation_messages_total",
                        {"outcome": "dead_lettered"}) == len(bad)
    assert metric_value(pipeline.port, "moderation_flags_total", {"policy": "weapons"}) >= 4
    assert http_ok(f"http://127.0.0.1:{pipeline.port}/readyz")


def test_policy_changes_reach_the_running_worker_within_two_seconds(
        pipeline: Pipeline, knife_and_dog: dict[str, Path]) -> None:
    base = load_policy_dir(REPO / "policies")
    dogs = Policy(name="dogs", threshold=0.3, prompts=("a dog", "a photo of a dog"))
    with_dogs = PolicySet(policies=(*base.policies, dogs))
    version = apply_policies(with_dogs, TritonEncoder.from_settings(pipeline.settings.triton),
                             pipeline.store)
    applied = time.monotonic()
    while metric_value(pipeline.port, "moderation_policy_version") != version:
        assert time.monotonic() - applied < 2.0, "worker did not switch within 2 s"
        time.sleep(0.05)
    produce(pipeline.settings, [("dog-after", event("dog-after",
                                                    knife_and_dog["dog"].read_bytes()), [])])
    [(kind, decision)] = read_outcomes(pipeline.settings, {"dog-after"})["dog-after"]
    assert kind == "decision" and decision["policy_version"] == version
    assert "dogs" in decision["flagged_policies"]
    assert [v["policy"] for v in decision["verdicts"]][-1] == "dogs"


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):  # peak resident set size
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_hostile_corpus_through_the_real_pipeline(pipeline: Pipeline,
                                                 knife_and_dog: dict[str, Path]) -> None:
    """Every hostile case gets its specific outcome from the real worker and Triton (the
    truncated and corrupt images are refused by Triton's decoder), the worker's peak
    memory stays bounded, and a normal upload sent after the corpus is still decided."""
    corpus = [c for c in hc.build() if c.value is not None]
    produce(pipeline.settings, [(c.upload_id, c.value or b"", c.headers) for c in corpus])
    outcomes = read_outcomes(pipeline.settings, {c.upload_id for c in corpus})
    got = {c.name: [kind if kind == "decision" else h["error-type"].decode()
                    for kind, h in outcomes.get(c.upload_id, [])] for c in corpus}
    want = {c.name: ["decision" if c.expected == hc.DECIDED else c.expected] for c in corpus}
    assert got == want
    produce(pipeline.settings, [("canary-after-corpus",
                                 event("canary-after-corpus", knife_and_dog["dog"].read_bytes()),
                                 [])])
    [(kind, _)] = read_outcomes(pipeline.settings, {"canary-after-corpus"})["canary-after-corpus"]
    assert kind == "decision"
    assert pipeline.worker.alive()
    assert rss_kib(pipeline.worker.pid) < 1_000_000  # peak under 1 GB, bombs included
    assert http_ok(f"http://127.0.0.1:{pipeline.port}/readyz")
