"""Hostile input through the worker: every case gets the outcome it must get, the worker
keeps going, and the input decoder survives fuzzing. The same corpus runs through the
real broker and Triton in test_worker_e2e.py."""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from moderation.config import ImageSettings, KafkaSettings
from moderation.contract.errors import ImageError
from moderation.contract.events import InputError, parse_upload
from moderation.core.images import DecodeLimits, decode_image, inspect_image
from moderation.edges.encoders import RejectedImage
from tests.fakes import TP, FakeConsumer, FakeRecord, unit
from tests.worker import hostile_corpus as hc
from tests.worker.test_worker import DECISIONS, DLQ, make_worker
from tests.worker.test_worker import settings as worker_settings

LIMITS = DecodeLimits(hc.MAX_IMAGE_BYTES, hc.MAX_PIXELS, hc.MAX_FRAMES)


class DecodingEncoder:
    """Decodes for real, like clip_image does inside Triton; embeddings are constant."""

    model_name = "fake@1"

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        for img in images:
            try:
                decoded = decode_image(img, LIMITS)
            except ImageError as exc:
                raise RejectedImage(exc.reason, f"{exc.reason}: {exc}") from exc
            assert decoded.mode == "RGB"
        return np.stack([unit(0) for _ in images])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        raise NotImplementedError

    def ready(self) -> bool:
        return True


CORPUS = hc.build()


def test_every_hostile_case_gets_its_specific_outcome() -> None:
    cfg = worker_settings().model_copy(update={
        "kafka": KafkaSettings(max_message_bytes=hc.MAX_MESSAGE_BYTES),
        "images": ImageSettings(max_bytes=hc.MAX_IMAGE_BYTES, max_pixels=hc.MAX_PIXELS,
                                max_frames=hc.MAX_FRAMES)})
    records = [FakeRecord("uploads", 0, i, c.value, key=c.upload_id.encode(), headers=c.headers)
               for i, c in enumerate(CORPUS)]
    consumer = FakeConsumer(records)
    worker, pub, _ = make_worker(consumer, DecodingEncoder(), cfg=cfg)  # type: ignore[arg-type]
    worker.run(idle_exit_s=0.5)

    outcome: dict[int, list[str]] = {}
    for _, _, value, _ in pub.on(DECISIONS):
        uid = json.loads(value or b"")["upload_id"]
        outcome.setdefault(next(i for i, c in enumerate(CORPUS) if c.upload_id == uid),
                           []).append(hc.DECIDED)
    for _, _, _, headers in pub.on(DLQ):
        h = dict(headers)
        outcome.setdefault(int(h["source-offset"]), []).append(h["error-type"].decode())
    got = {c.name: outcome.get(i, []) for i, c in enumerate(CORPUS)}
    assert got == {c.name: [c.expected] for c in CORPUS}
    assert consumer.last_committed() == {TP("uploads", 0): len(CORPUS)}
    assert worker.stats["decided"] + worker.stats["dead_lettered"] == len(CORPUS)


def test_limits_are_configurable() -> None:
    gif = hc.many_frame_gif(5)
    assert inspect_image(gif, DecodeLimits(max_frames=5))
    with pytest.raises(ImageError, match="frames") as exc:
        inspect_image(gif, DecodeLimits(max_frames=4))
    assert exc.value.reason == "too_many_frames"
    png = hc.encode(hc.photo((100, 100)), "PNG")
    with pytest.raises(ImageError) as exc:
        decode_image(png, DecodeLimits(max_pixels=9_999))
    assert exc.value.reason == "too_many_pixels"
    with pytest.raises(ImageError) as exc:
        decode_image(png, DecodeLimits(max_bytes=len(png) - 1))
    assert exc.value.reason == "image_too_large"


def _valid_images() -> list[bytes]:
    base = hc.photo((32, 24))
    return [hc.encode(base, f) for f in ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")]


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(_valid_images())))
    for _ in range(draw(st.integers(0, 8))):  # flip, drop or insert bytes
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(mutated_images(), st.binary(max_size=2048)))
def test_decoder_returns_rgb_within_limits_or_a_reasoned_error(data: bytes) -> None:
    limits = DecodeLimits(max_bytes=1_000_000, max_pixels=1_000_000, max_frames=10)
    try:
        img = decode_image(data, limits)
    except ImageError as exc:
        assert exc.reason in {"empty_image", "image_too_large", "too_many_pixels",
                              "too_many_frames", "undecodable_image", "corrupt_image"}
        return
    assert isinstance(img, Image.Image) and img.mode == "RGB"
    assert img.size[0] * img.size[1] <= limits.max_pixels


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=512),
                 st.dictionaries(st.sampled_from(["upload_id", "image_b64", "image_url",
                                                  "created_at", "metadata", "user_id", "x"]),
                                 st.one_of(st.text(max_size=40), st.integers(), st.none(),
                                           st.lists(st.integers(), max_size=3)),
                                 max_size=5).map(lambda d: json.dumps(d).encode())),
       st.lists(st.tuples(st.sampled_from(["upload-id", "x"]), st.binary(max_size=20)),
                max_size=2))
def test_event_parser_accepts_or_names_a_reason(value: bytes,
                                                headers: list[tuple[str, bytes]]) -> None:
    try:
        upload = parse_upload(value, headers, max_bytes=10_000)
    except InputError as exc:
        assert exc.reason and str(exc)
        return
    assert 1 <= len(upload.upload_id) <= 256
    assert (upload.image is None) != (upload.image_url is None)


def test_decoding_does_not_allocate_a_bomb() -> None:
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ImageError):
        decode_image(hc.png_bomb(), DecodeLimits())
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 100_000  # the 400 M-pixel image was never allocated


def _depth(value: object) -> int:
    if isinstance(value, dict):
        return 1 + max(map(_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
    | st.text(alphabet='[]{}"\\ab', max_size=8),  # brackets and quotes inside strings too
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner,
                                                                max_size=3),
    max_leaves=40)


@settings(max_examples=300, deadline=None)
@given(_json_values, st.integers(0, 40))
def test_nested_events_parse_or_are_invalid_json_by_depth(value: object, wrap: int) -> None:
    from moderation.contract.events import MAX_JSON_DEPTH

    for _ in range(wrap):
        value = [value]
    doc = {"upload_id": "nested", "image_b64": "AAAA", "metadata": {"m": value}}
    depth = 2 + _depth(value)  # the event object, then metadata
    try:
        upload = parse_upload(json.dumps(doc).encode())
    except InputError as exc:
        assert depth > MAX_JSON_DEPTH and exc.reason == "invalid_json", str(exc)
        return
    assert depth <= MAX_JSON_DEPTH and upload.event is not None
    assert upload.event.metadata == {"m": value}
