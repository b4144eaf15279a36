"""Send image files as upload events (the ``produce`` command, the demo and tests)."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moderation.config import KafkaSettings
from moderation.edges.kafka_io import BrokerError, KafkaPublisher


def upload_event(upload_id: str, image: bytes, created_at: datetime | None = None,
                 **extra: Any) -> bytes:
    """The JSON value of one upload event (``image_b64`` form)."""
    doc: dict[str, Any] = {"upload_id": upload_id,
                           "image_b64": base64.b64encode(image).decode("ascii"),
                           "created_at": (created_at or datetime.now(UTC)).isoformat()}
    doc.update(extra)
    return json.dumps(doc).encode()


@dataclass(frozen=True)
class Produced:
    upload_id: str
    path: Path


def produce_files(settings: KafkaSettings, paths: Sequence[Path], id_prefix: str = "",
                  raw: bool = False, topic: str | None = None) -> list[Produced]:
    """Send every file (upload id = prefix + file stem) and wait for the broker's acks."""
    publisher = KafkaPublisher(settings)
    errors: list[Exception] = []
    acked = threading.Semaphore(0)

    def done(exc: Exception | None) -> None:
        if exc is not None:
            errors.append(exc)
        acked.release()

    out = []
    try:
        for path in paths:
            upload_id = f"{id_prefix}{path.stem}"
            data = path.read_bytes()
            if raw:  # the raw-bytes form: the image is the value, the id a header
                publisher.publish(topic or settings.input_topic, upload_id.encode(), data,
                                  [("upload-id", upload_id.encode())], done)
            else:
                publisher.publish(topic or settings.input_topic, upload_id.encode(),
                                  upload_event(upload_id, data), [], done)
            out.append(Produced(upload_id, path))
        publisher.flush(60.0)
        for _ in out:
            if not acked.acquire(timeout=60.0):
                raise BrokerError("the broker did not acknowledge every upload within 60 s")
    finally:
        publisher.close()
    if errors:
        raise BrokerError(f"{len(errors)} of {len(out)} uploads were not accepted: {errors[0]}")
    return out


def produce_events(settings: KafkaSettings, images: Sequence[bytes], ids: Sequence[str],
                   rate_per_s: float | None = None, raw: bool = False) -> dict[str, float]:
    """Send one upload event per id (images reused in turn), as fast as the broker takes
    them or paced at ``rate_per_s``; returns id -> created_at (epoch seconds). ``raw``: the
    image bytes as the value and the id in the ``upload-id`` header, else JSON events."""
    from kafka import KafkaProducer

    producer = KafkaProducer(**settings.client_options(), acks="all", linger_ms=5,
                             max_request_size=settings.max_message_bytes,
                             batch_size=1_048_576)
    created: dict[str, float] = {}
    start = time.monotonic()
    try:
        for i, uid in enumerate(ids):
            if rate_per_s:
                delay = start + i / rate_per_s - time.monotonic()
                if delay > 0:
                    time.sleep(delay)  # pacing the offered load, not synchronisation
            now = datetime.now(UTC)
            created[uid] = now.timestamp()
            image = images[i % len(images)]
            if raw:
                producer.send(settings.input_topic, key=uid.encode(), value=image,
                              headers=[("upload-id", uid.encode())])
            else:
                producer.send(settings.input_topic, key=uid.encode(),
                              value=upload_event(uid, image, created_at=now))
        producer.flush(timeout=120)
    finally:
        producer.close()
    return created
