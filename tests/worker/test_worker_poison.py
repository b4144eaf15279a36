"""No single record stops the worker: unexpected exceptions dead-letter that record as
internal_error, and a record that keeps killing its worker or Triton ends as poison_record
(in-memory edges here; real processes in test_poison_e2e.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from moderation.contract.errors import EncoderError
from moderation.worker import loop, pipeline
from tests.fakes import (
    BLUE,
    RED,
    TP,
    FakeAttempts,
    FakeConsumer,
    FakeEncoder,
    FakeRecord,
    png,
)
from tests.worker.test_worker import (
    DECISIONS,
    DLQ,
    dead_letters,
    event,
    make_worker,
    records,
    settings,
)

ODD = png((1, 2, 3))  # an image some stage below is made to choke on


def decided_ids(pub: Any) -> list[str]:
    return sorted(json.loads(v or b"")["upload_id"] for _, _, v, _ in pub.on(DECISIONS))


def dead_letter_headers(pub: Any) -> dict[str, dict[str, str]]:
    return {dict(h)["source-offset"].decode(): {k: v.decode() for k, v in h}
            for _, _, _, h in pub.on(DLQ)}


def _raise_for_odd(real: Any, exc: Exception) -> Any:
    def wrapped(image: bytes, *args: Any) -> Any:
        if image == ODD:
            raise exc
        return real(image, *args)
    return wrapped


class OddEncoder(FakeEncoder):
    """Raises something no encoder promises (a bug) whenever ODD is in the batch."""

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        if ODD in images:
            self.calls.append(len(images))
            raise IndexError("output row missing")
        return super().embed_images(images)


@pytest.mark.parametrize("stage", ["parse", "validate", "infer", "score"])
def test_an_unexpected_exception_dead_letters_only_that_upload(
        stage: str, monkeypatch: pytest.MonkeyPatch) -> None:
    encoder = FakeEncoder()
    if stage == "parse":
        real_parse = loop.parse_upload

        def parse(value: bytes | None, *args: Any) -> Any:
            if value and b'"odd"' in value:
                raise KeyError("surprise")
            return real_parse(value, *args)
        monkeypatch.setattr(loop, "parse_upload", parse)
    elif stage == "validate":
        monkeypatch.setattr(pipeline, "inspect_image",
                            _raise_for_odd(pipeline.inspect_image, TypeError("surprise")))
    elif stage == "infer":
        encoder = OddEncoder()
    else:
        real_decide = pipeline.decide

        def decide(uploads: Any, *args: Any) -> Any:
            if any(u.upload_id == "odd" for u, _ in uploads):
                raise ZeroDivisionError("surprise")
            return real_decide(uploads, *args)
        monkeypatch.setattr(pipeline, "decide", decide)

    values = [event(f"u{i}", RED if i % 2 else BLUE) for i in range(6)]
    values.insert(3, event("odd", ODD))
    consumer = FakeConsumer(records(values))
    worker, pub, metrics = make_worker(consumer, encoder)
    worker.run(idle_exit_s=0.3)

    assert decided_ids(pub) == [f"u{i}" for i in range(6)]
    [(offset, headers)] = dead_letter_headers(pub).items()
    assert offset == "3" and headers["error-type"] == "internal_error"
    assert headers["error-message"].startswith(f"{stage}: ")
    assert metrics.internal_errors.labels(stage)._value.get() == 1
    assert consumer.last_committed() == {TP("uploads", 0): 7}


def test_a_record_whose_attempts_never_finished_is_a_poison_record_unprocessed() -> None:
    encoder = FakeEncoder()
    attempts = FakeAttempts(prior={("uploads", 0, 1): 3, ("uploads", 0, 2): 1})
    consumer = FakeConsumer(records([event(f"u{i}", RED) for i in range(4)]))
    worker, pub, metrics = make_worker(consumer, encoder, attempts=attempts)
    worker.run(idle_exit_s=0.3)

    assert decided_ids(pub) == ["u0", "u2", "u3"]
    assert dead_letters(pub) == {"1": "poison_record"}
    assert "started 3 times without finishing" in dead_letter_headers(pub)["1"]["error-message"]
    # u2 (one unfinished attempt) ran alone and first, after a known-good image showed
    # Triton healthy; then u0 and u3 together
    assert encoder.calls == [1, 1, 2]
    assert metrics.isolated.labels("unfinished_attempt")._value.get() == 1
    assert attempts.n == {}  # every settled record's count is dropped
    assert consumer.last_committed() == {TP("uploads", 0): 4}


class StubCrashEncoder(FakeEncoder):
    """Fails every call with ODD in it, the way a crashed python-backend stub answers;
    a known-good image (the canary) embeds."""

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        if ODD in images:
            self.calls.append(len(images))
            raise EncoderError("Triton at fake: Stub process 'clip_image_0_0' is not healthy.")
        return super().embed_images(images)


def test_an_upload_that_breaks_triton_alone_ends_as_a_poison_record() -> None:
    encoder = StubCrashEncoder()
    attempts = FakeAttempts()
    values = [event(f"u{i}", RED) for i in range(3)] + [event("odd", ODD)]
    consumer = FakeConsumer(records(values))
    worker, pub, metrics = make_worker(consumer, encoder, attempts=attempts,
                                       cfg=settings(max_attempts=3))
    worker.run(idle_exit_s=0.5)

    assert decided_ids(pub) == ["u0", "u1", "u2"]
    assert dead_letters(pub) == {"3": "poison_record"}
    # batch of 4 twice, then each alone; odd alone on attempts 2 and 3, refused at the 4th
    assert [n for n in encoder.calls if n > 1] == [4, 4]
    assert encoder.calls.count(1) >= 3 + 2
    assert metrics.isolated.labels("failed_batch")._value.get() >= 4
    assert consumer.last_committed() == {TP("uploads", 0): 4}


def test_attempt_counter_down_means_deciding_without_the_guard() -> None:
    attempts = FakeAttempts(down=True)
    consumer = FakeConsumer(records([event(f"u{i}", RED) for i in range(3)]))
    worker, pub, metrics = make_worker(consumer, attempts=attempts)
    worker.run(idle_exit_s=0.3)
    assert decided_ids(pub) == ["u0", "u1", "u2"]
    assert metrics.attempt_errors._value.get() >= 1


def test_a_failing_poll_pauses_the_loop_and_never_stops_it() -> None:
    class FlakyConsumer(FakeConsumer):
        def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> Any:
            if self.polls < 3:
                self.polls += 1
                raise OSError("coordinator went away")
            return super().poll(timeout_ms, max_records)

    consumer = FlakyConsumer(records([event("u0", RED)]))
    worker, pub, metrics = make_worker(consumer)
    worker.run(idle_exit_s=0.3)
    assert decided_ids(pub) == ["u0"]
    assert metrics.poll_errors._value.get() == 3


def test_a_kafka_timestamp_past_the_calendar_is_decided() -> None:
    consumer = FakeConsumer([FakeRecord("uploads", 0, 0, event("u0", RED), timestamp=2**62)])
    worker, pub, _ = make_worker(consumer)
    worker.run(idle_exit_s=0.3)
    assert decided_ids(pub) == ["u0"]
