"""Send image files as upload events (the ``produce`` command, the demo and tests)."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from moderation.config import KafkaSettings
from moderation.kafka_io import BrokerError, KafkaPublisher


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
