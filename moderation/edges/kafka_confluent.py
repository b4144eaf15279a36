"""The confluent-kafka (librdkafka) clients behind the same surface as the kafka-python
ones: the worker's default, because librdkafka fetches, parses and batches in C threads
(`moderation bench`: 0.32 against 0.50 ms of worker CPU per 50 KB upload; README:
Performance).

``ConfluentConsumer`` offers the part of kafka-python's ``KafkaConsumer`` that
``worker.partitions`` uses (subscribe with a rebalance listener, poll, commit, pause,
watermarks), so one ``Partitions`` drives either client. Differences that matter:
librdkafka runs the rebalance callbacks on the polling thread, inside ``poll()``, and
starts a newly assigned partition at its committed offset itself, so ``Partitions`` need
not reposition it (``positions_on_assign``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka import TopicPartition as RdTopicPartition
from kafka.structs import TopicPartition  # the one partition type the worker keys on

from moderation.config import KafkaSettings
from moderation.edges.kafka_io import BrokerError, Done, Headers

log = logging.getLogger(__name__)
_librdkafka_log = logging.getLogger("moderation.edges.librdkafka")


def connection_config(settings: KafkaSettings) -> dict[str, Any]:
    """``KafkaSettings.client_options()`` in librdkafka's names."""
    conf: dict[str, Any] = {"bootstrap.servers": settings.bootstrap_servers,
                            "security.protocol": settings.security_protocol.lower(),
                            "logger": _librdkafka_log}
    if settings.sasl_mechanism:
        conf["sasl.mechanism"] = settings.sasl_mechanism
        conf["sasl.username"] = settings.sasl_username
        if settings.sasl_password:
            conf["sasl.password"] = settings.sasl_password.get_secret_value()
    if settings.ssl_cafile:
        conf["ssl.ca.location"] = str(settings.ssl_cafile)
    return conf


@dataclass(frozen=True, slots=True)
class ConsumedRecord:
    """A consumed message as the worker's ``Record`` protocol reads it."""

    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    headers: Headers


class ConfluentConsumer:
    """A librdkafka group consumer with kafka-python's method names (manual commits)."""

    positions_on_assign = True

    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        conf = {
            **connection_config(settings),
            "group.id": settings.group_id,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": settings.session_timeout_ms,
            "heartbeat.interval.ms": max(500, settings.session_timeout_ms // 4),
            # room for a record well over the limit, so it can be fetched and dead-lettered
            "fetch.max.bytes": max(52_428_800, 2 * settings.max_message_bytes + 1024 * 1024),
            "max.partition.fetch.bytes": 2 * settings.max_message_bytes + 1024 * 1024,
            "receive.message.max.bytes": max(100_000_000,
                                             2 * settings.max_message_bytes + 2 * 1024 * 1024),
            "error_cb": self._on_error,
            **overrides,
        }
        try:
            self._consumer: Any = Consumer(conf)
        except Exception as exc:
            raise BrokerError(f"Kafka at {settings.bootstrap_servers}: {exc}") from exc
        self._max_records = settings.max_poll_records
        self._paused: set[Any] = set()
        self._assigned: set[Any] = set()

    @staticmethod
    def _on_error(err: Any) -> None:
        # transport errors are retried by librdkafka itself; they are worth a line, no more
        _librdkafka_log.warning("kafka client: %s", err)

    def subscribe(self, topics: list[str], listener: Any) -> None:
        def assigned(_consumer: Any, parts: list[Any]) -> None:
            tps = [TopicPartition(p.topic, p.partition) for p in parts]
            self._assigned.update(tps)
            listener.on_partitions_assigned(tps)

        def revoked(_consumer: Any, parts: list[Any]) -> None:
            tps = [TopicPartition(p.topic, p.partition) for p in parts]
            listener.on_partitions_revoked(tps)
            self._assigned.difference_update(tps)
            self._paused.difference_update(tps)

        def lost(_consumer: Any, parts: list[Any]) -> None:
            tps = [TopicPartition(p.topic, p.partition) for p in parts]
            listener.on_partitions_lost(tps)
            self._assigned.difference_update(tps)
            self._paused.difference_update(tps)

        self._consumer.subscribe(topics, on_assign=assigned, on_revoke=revoked, on_lost=lost)

    def poll(self, timeout_ms: int, max_records: int) -> Mapping[Any, list[ConsumedRecord]]:
        out: dict[Any, list[ConsumedRecord]] = {}
        messages = self._consumer.consume(min(max_records, self._max_records),
                                          timeout_ms / 1000)
        for m in messages:
            err = m.error()
            if err is not None:
                if err.fatal():
                    raise BrokerError(f"fatal consumer error: {err}")
                log.warning("consume: %s", err)  # e.g. a partition error; librdkafka retries
                continue
            topic, partition = m.topic(), m.partition()
            out.setdefault(TopicPartition(topic, partition), []).append(ConsumedRecord(
                topic, partition, m.offset(), m.timestamp()[1], m.key(), m.value(),
                m.headers() or ()))
        return out

    def assignment(self) -> set[Any]:
        return set(self._assigned)

    def _offsets(self, offsets: Mapping[Any, Any]) -> list[Any]:
        return [RdTopicPartition(tp.topic, tp.partition, getattr(o, "offset", o))
                for tp, o in offsets.items()]

    def commit(self, offsets: Mapping[Any, Any]) -> None:
        self._consumer.commit(offsets=self._offsets(offsets), asynchronous=False)

    def commit_async(self, offsets: Mapping[Any, Any]) -> None:
        # called from the revocation callback, which librdkafka runs on the polling thread:
        # a blocking commit is safe there, and lands before the group re-forms
        self.commit(offsets)

    def highwater(self, tp: Any) -> int | None:
        try:  # cached: from fetch responses (Tansu's ListOffsets is wrong)
            _low, high = self._consumer.get_watermark_offsets(
                RdTopicPartition(tp.topic, tp.partition), cached=True)
        except Exception:
            return None
        return int(high) if high >= 0 else None

    def position(self, tp: Any, timeout_ms: int = 0) -> int | None:
        [p] = self._consumer.position([RdTopicPartition(tp.topic, tp.partition)])
        return int(p.offset) if p.offset >= 0 else None

    def committed(self, tp: Any, timeout_ms: int = 2000) -> int | None:
        [p] = self._consumer.committed([RdTopicPartition(tp.topic, tp.partition)],
                                       timeout=timeout_ms / 1000)
        return int(p.offset) if p.offset >= 0 else None

    def pause(self, *tps: Any) -> None:
        self._consumer.pause([RdTopicPartition(tp.topic, tp.partition) for tp in tps])
        self._paused.update(tps)

    def resume(self, *tps: Any) -> None:
        self._consumer.resume([RdTopicPartition(tp.topic, tp.partition) for tp in tps])
        self._paused.difference_update(tps)

    def paused(self) -> set[Any]:
        return set(self._paused)

    def close(self, autocommit: bool = False) -> None:
        self._consumer.close()  # enable.auto.commit is off: commits nothing itself


class ConfluentPublisher:
    """Idempotent, acks=all librdkafka producer. Acknowledgements are delivered by a
    thread that polls it (the ``producer`` thread, as with kafka-python). A producer in a
    fatal state (an idempotent producer id the broker forgot) is replaced, and the sends
    it still held fail back to the worker, which retries them."""

    def __init__(self, settings: KafkaSettings, **overrides: Any) -> None:
        self._conf: dict[str, Any] = {
            **connection_config(settings),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 2,
            # a dead letter carries the original value (cut at max_message_bytes)
            "message.max.bytes": settings.max_message_bytes + 1024 * 1024,
            "error_cb": self._on_error,
            **overrides,
        }
        self._servers = settings.bootstrap_servers
        self._lock = threading.Lock()
        self._fatal = threading.Event()
        self._closed = threading.Event()
        self._producer = self._new()
        self._poller = threading.Thread(target=self._poll, name="producer", daemon=True)
        self._poller.start()

    def _new(self) -> Any:
        try:
            return Producer(self._conf)
        except Exception as exc:
            raise BrokerError(f"Kafka at {self._servers}: {exc}") from exc

    def _on_error(self, err: Any) -> None:
        if err.fatal():
            self._fatal.set()
            log.warning("producer fatal error: %s", err)
        else:
            _librdkafka_log.warning("kafka client: %s", err)

    def _poll(self) -> None:
        while not self._closed.is_set():
            try:  # replaces a fatal producer at once: its sends fail back and are retried
                self._healthy_producer().poll(0.05)  # runs the delivery callbacks
            except Exception as exc:  # a fatal error also surfaces here, as an exception
                err = exc.args[0] if exc.args else None
                if err is not None and callable(getattr(err, "fatal", None)) and err.fatal():
                    self._fatal.set()
                else:
                    log.warning("producer poll: %s", exc)

    def _healthy_producer(self) -> Any:
        with self._lock:
            if self._fatal.is_set():
                self._fatal.clear()
                old, self._producer = self._producer, self._new()
                log.warning("producer entered a fatal state; replaced it with a new one")
                threading.Thread(target=_drain, args=(old,), daemon=True).start()
            return self._producer

    def publish(self, topic: str, key: bytes | None, value: bytes | None, headers: Headers,
                done: Done) -> None:
        def delivered(err: Any, _msg: Any) -> None:
            done(None if err is None else BrokerError(f"not acknowledged: {err}"))

        try:
            self._healthy_producer().produce(topic, value=value, key=key,
                                             headers=list(headers), on_delivery=delivered)
        except Exception as exc:  # queue full, message too large...
            done(exc)

    def flush(self, timeout_s: float) -> None:
        left = self._producer.flush(timeout_s)
        if left:  # unacknowledged sends stay uncommitted
            log.warning("producer flush did not finish: %d sends unacknowledged", left)

    def close(self, timeout_s: float = 10.0) -> None:
        self.flush(timeout_s)
        self._closed.set()
        self._poller.join(timeout=1.0)


def _drain(producer: Any) -> None:
    """Fail what a replaced producer still holds, so each send's callback runs."""
    try:
        producer.purge()
        producer.flush(1.0)
    except Exception as exc:
        log.warning("draining the replaced producer: %s", exc)

