"""What moves between the worker's parts: a parsed upload (Job) and an outgoing message (Send)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from moderation.contract.events import Decision, Upload
from moderation.edges.attempt_counter import Coordinates
from moderation.edges.kafka_io import Headers, Record

TP = Any  # kafka.TopicPartition: a (topic, partition) named tuple


@dataclass(frozen=True)
class Job:
    """One parsed upload waiting for its decision."""

    tp: TP
    epoch: int  # the partition's ownership epoch when polled (see Partitions)
    record: Record
    upload: Upload
    started: datetime
    image: bytes | None  # the upload's bytes, or fetched from its image_url

    @property
    def coordinates(self) -> Coordinates:
        return (self.record.topic, self.record.partition, self.record.offset)


@dataclass(eq=False)
class Pending:
    """Sends of one record still unacknowledged (its decision and its review record): the
    record settles when the last is acknowledged."""

    remaining: int


@dataclass(frozen=True)
class Send:
    """One decision, review record or dead letter on its way to the broker, and what its
    ack settles."""

    tp: TP
    epoch: int
    offset: int
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    decision: Decision | None = None
    error_type: str | None = None
    review: bool = False  # the copy for the review topic (the decision is sent apart)
    pending: Pending | None = None  # shared by a record's sends when it has several
    attempt: int = 0
    not_before: float = 0.0


def partition_names(tps: Iterable[TP]) -> str:
    return ",".join(sorted(f"{tp.topic}/{tp.partition}" for tp in tps)) or "-"


def record_key(record: Record) -> str:
    return record.key.decode("utf-8", "replace")[:80] if record.key else "-"


def upload_ids(jobs: list[Job]) -> str:
    shown = ",".join(j.upload.upload_id for j in jobs[:5])
    return f"upload_id={shown}" + (f" (+{len(jobs) - 5} more)" if len(jobs) > 5 else "")
