"""Producing uploads and reading outcomes on a real broker (integration tests)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from typing import Any

from moderation.config import Settings
from moderation.edges.kafka_io import poll_keyed, read_from_start
from moderation.models.bundle import load_bundle


def demo_model_name() -> str:
    """``name@version`` of the committed demo bundle (what decisions and the store record)."""
    return load_bundle("demo").name  # towers load lazily: this reads only the manifest


def produce(settings: Settings, items: list[tuple[str | None, bytes, list[tuple[str, bytes]]]]
            ) -> dict[int, int]:
    """Send (key, value, headers) items; returns the highest offset + 1 per partition."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**settings.kafka.client_options(), acks="all",
                             max_request_size=8_000_000)
    futures = [producer.send(settings.kafka.input_topic, key=key.encode() if key else None,
                             value=value, headers=headers) for key, value, headers in items]
    producer.flush()
    ends: dict[int, int] = {}
    for f in futures:
        meta = f.get(timeout=30)
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    producer.close()
    return ends


def read_outcomes(settings: Settings, keys: set[str], timeout_s: float = 120.0
                  ) -> dict[str, list[tuple[str, Any]]]:
    """Every decision and dead letter for these keys: key -> [(topic kind, payload)]."""
    k = settings.kafka
    consumer = read_from_start(k, [k.decision_topic, k.dead_letter_topic])
    out: dict[str, list[tuple[str, Any]]] = {}
    deadline = time.monotonic() + timeout_s
    while not keys <= out.keys() and time.monotonic() < deadline:
        for key, r in poll_keyed(consumer, 500):
            if key not in keys:
                continue
            if r.topic == k.decision_topic:
                out.setdefault(key, []).append(("decision", json.loads(r.value)))
            else:
                out.setdefault(key, []).append(("dlq", dict(r.headers)))
    consumer.close()
    return out


def read_topic(settings: Settings, topic: str, keys: set[str], timeout_s: float = 60.0
               ) -> dict[str, Any]:
    """The JSON values of ``topic`` for these keys (the latest per key), until all came."""
    consumer = read_from_start(settings.kafka, [topic])
    out: dict[str, Any] = {}
    deadline = time.monotonic() + timeout_s
    while not keys <= out.keys() and time.monotonic() < deadline:
        for key, r in poll_keyed(consumer, 500):
            out[key] = json.loads(r.value)
    consumer.close()
    return out


def event(upload_id: str, image: bytes, **extra: Any) -> bytes:
    return json.dumps({"upload_id": upload_id, "image_b64": base64.b64encode(image).decode(),
                       "created_at": "2026-11-27T10:00:00Z", **extra}).encode()


def produce_tracked(settings: Settings, items: list[tuple[str, bytes]]
                    ) -> dict[str, tuple[int, int]]:
    """Send (upload id, value) pairs; returns upload id -> (partition, offset)."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**settings.kafka.client_options(), acks="all")
    futures = {key: producer.send(settings.kafka.input_topic, key=key.encode(), value=value)
               for key, value in items}
    producer.flush()
    out = {}
    for key, f in futures.items():
        meta = f.get(timeout=30)
        out[key] = (meta.partition, meta.offset)
    producer.close()
    return out


def worker_env(kafka_bootstrap: str, redis_url: str, triton_url: str, name: str
               ) -> dict[str, str]:
    """Settings for a worker with topics, group and Redis keys of its own (``name`` + a
    random suffix), on the session's broker, Redis and Triton."""
    run = f"{name}-{uuid.uuid4().hex[:6]}"
    return {"MODERATION_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "MODERATION_KAFKA__INPUT_TOPIC": f"uploads-{run}",
            "MODERATION_KAFKA__DECISION_TOPIC": f"decisions-{run}",
            "MODERATION_KAFKA__DEAD_LETTER_TOPIC": f"dlq-{run}",
            "MODERATION_KAFKA__REVIEW_TOPIC": f"review-{run}",
            "MODERATION_KAFKA__GROUP_ID": f"group-{run}",
            "MODERATION_KAFKA__SESSION_TIMEOUT_MS": "6000",  # Tansu joins take half of it
            "MODERATION_REDIS__URL": redis_url, "MODERATION_REDIS__KEY_PREFIX": run,
            "MODERATION_TRITON__URL": triton_url}
