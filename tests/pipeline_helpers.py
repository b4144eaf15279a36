"""Producing uploads and reading outcomes on a real broker (integration tests)."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from moderation.config import Settings
from moderation.kafka_io import read_from_start


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
        for tp, records in consumer.poll(timeout_ms=500).items():
            for r in records:
                key = r.key.decode() if r.key else ""
                if key not in keys:
                    continue
                if tp.topic == k.decision_topic:
                    out.setdefault(key, []).append(("decision", json.loads(r.value)))
                else:
                    out.setdefault(key, []).append(("dlq", dict(r.headers)))
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


def committed_offsets(settings: Settings, partitions: int = 4) -> dict[int, int | None]:
    """The worker group's committed offset per input partition."""
    from kafka import KafkaConsumer, TopicPartition

    k = settings.kafka
    group = KafkaConsumer(**k.client_options(), group_id=k.group_id, enable_auto_commit=False)
    try:
        return {p: group.committed(TopicPartition(k.input_topic, p)) for p in range(partitions)}
    finally:
        group.close()
