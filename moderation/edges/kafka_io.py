"""The Kafka edge: the record and publisher interfaces the worker codes against, and the
clients behind them: confluent-kafka (librdkafka, ``kafka_confluent``, the default) or
kafka-python (``KAFKA__CLIENT``). The tools, the benchmark's drivers and the tests use
kafka-python. Plain Kafka protocol only, so a real cluster works unchanged (the embedded
stack runs the Tansu broker)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from moderation.config import KafkaSettings
from moderation.contract.errors import ModerationError

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, bytes]]
Done = Callable[[Exception | None], None]


class BrokerError(ModerationError):
    """The Kafka cluster refused or could not be reached."""


class Record(Protocol):
    """What the worker reads from a consumed message (kafka-python's ConsumerRecord fits)."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Headers: ...


class Publisher(Protocol):
    def publish(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers,
                done: Done) -> None:
        """Send asynchronously; ``done(None)`` once the broker acknowledged (acks=all),
        ``done(exc)`` if it did not."""

    def flush(self, timeout_s: float) -> None: ...

    def close(self, timeout_s: float = 10.0) -> None: ...


class KafkaPublisher:
    """Idempotent, acks=all producer. A producer that enters a fatal state (for instance an
    idempotent producer id the broker forgot after a restart) fails every later send; it is
    replaced by a fresh one, so the worker's retries can succeed."""

    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        self._options: dict[str, Any] = {
            **settings.client_options(),
            "acks": "all",
            "linger_ms": 2,
            # a dead letter carries the original value (cut at max_message_bytes)
            "max_request_size": settings.max_message_bytes + 1024 * 1024,
            **overrides,
        }
        self._servers = settings.bootstrap_servers
        self._lock = threading.Lock()
        self._producer = self._new()

    def _new(self) -> Any:
        from kafka import KafkaProducer

        try:
            return KafkaProducer(**self._options)
        except Exception as exc:
            raise BrokerError(f"Kafka at {self._servers}: {exc}") from exc

    def _fatal(self) -> bool:
        tm = getattr(self._producer, "_transaction_manager", None)
        return bool(tm is not None and tm.has_fatal_error())

    def _healthy_producer(self) -> Any:
        with self._lock:
            if self._fatal():  # checked here, never on the sender thread that is failing
                old, self._producer = self._producer, self._new()
                log.warning("producer entered a fatal state; replaced it with a new one")
                threading.Thread(target=old.close, kwargs={"timeout": 0}, daemon=True).start()
            return self._producer

    def publish(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers,
                done: Done) -> None:
        try:
            future = self._healthy_producer().send(topic, key=key, value=value,
                                                   headers=list(headers))
        except Exception as exc:  # buffer full, message too large, closed...
            done(exc)
            return
        future.add_callback(lambda _meta: done(None))
        future.add_errback(done)

    def flush(self, timeout_s: float) -> None:
        try:
            self._producer.flush(timeout=timeout_s)
        except Exception as exc:  # a flush timeout leaves unacknowledged sends uncommitted
            log.warning("producer flush did not finish: %s", exc)

    def close(self, timeout_s: float = 10.0) -> None:
        self._producer.close(timeout=timeout_s)


def make_publisher(settings: KafkaSettings) -> Publisher:
    """The worker's publisher, from the client ``settings.client`` names."""
    if settings.client == "confluent-kafka":
        from moderation.edges.kafka_confluent import ConfluentPublisher

        return ConfluentPublisher(settings)
    return KafkaPublisher(settings)


def make_consumer(settings: KafkaSettings, **overrides: Any) -> Any:
    """A group consumer with manual commits, from the client ``settings.client`` names (the
    worker commits acknowledged offsets). Both offer kafka-python's consumer methods."""
    if settings.client == "confluent-kafka":
        from moderation.edges.kafka_confluent import ConfluentConsumer

        return ConfluentConsumer(settings)
    from kafka import KafkaConsumer

    options: dict[str, Any] = {
        **settings.client_options(),
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": settings.max_poll_records,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(500, settings.session_timeout_ms // 4),
        # room for a record well over the limit, so it can be fetched and dead-lettered
        # (brokers that do not return an oversized first record would stall otherwise)
        "fetch_max_bytes": max(52_428_800, 2 * settings.max_message_bytes + 1024 * 1024),
        "max_partition_fetch_bytes": 2 * settings.max_message_bytes + 1024 * 1024,
        **overrides,
    }
    try:
        return KafkaConsumer(**options)
    except Exception as exc:
        raise BrokerError(f"Kafka at {settings.bootstrap_servers}: {exc}") from exc


def ensure_topics(settings: KafkaSettings, names: Sequence[str], partitions: int = 4) -> None:
    """Create the topics that do not exist yet (dev and tests; real clusters own theirs)."""
    from kafka.admin import KafkaAdminClient, NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = KafkaAdminClient(**settings.client_options())
    try:
        existing = set(admin.list_topics())
        new = [NewTopic(n, partitions, 1) for n in names if n not in existing]
        if new:
            with contextlib.suppress(TopicAlreadyExistsError):  # another client won the race
                admin.create_topics(new)
    except Exception as exc:
        raise BrokerError(f"Kafka at {settings.bootstrap_servers}: {exc}") from exc
    finally:
        admin.close()


def read_from_start(settings: KafkaSettings, topics: Sequence[str], **overrides: Any) -> Any:
    """A group-less consumer assigned every partition of ``topics``, at the beginning: how
    the demo, the benchmark and the chaos run watch decisions and dead letters arrive."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**settings.client_options(), enable_auto_commit=False,
                             auto_offset_reset="earliest", **overrides)
    tps = [TopicPartition(t, p) for t in topics
           for p in sorted(consumer.partitions_for_topic(t) or [])]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return consumer


def poll_keyed(consumer: Any, timeout_ms: int) -> list[tuple[str, Any]]:
    """One poll, as (key as text, record) pairs: how the demo, the benchmark, the chaos run
    and the tests pick out the records of the uploads they sent."""
    return [(r.key.decode("utf-8", "replace") if r.key else "", r)
            for records in consumer.poll(timeout_ms=timeout_ms).values() for r in records]


def committed_offsets(settings: KafkaSettings, partitions: Iterable[int]
                      ) -> dict[int, int | None]:
    """The group's committed offset per partition of the input topic (None: nothing
    committed). Asks the coordinator only; joins nothing."""
    from kafka import TopicPartition

    group = make_consumer(settings)
    try:
        return {p: group.committed(TopicPartition(settings.input_topic, p)) for p in partitions}
    finally:
        group.close(autocommit=False)


def scoped_topics(settings: KafkaSettings, prefix: str) -> KafkaSettings:
    """Settings with their own ``{prefix}-uploads``/``-decisions``/``-dlq``/``-review``
    topics and ``{prefix}`` group, so a run (bench, chaos) shares the broker with nothing
    else."""
    return settings.model_copy(update={
        "input_topic": f"{prefix}-uploads", "decision_topic": f"{prefix}-decisions",
        "dead_letter_topic": f"{prefix}-dlq", "review_topic": f"{prefix}-review",
        "group_id": prefix})
