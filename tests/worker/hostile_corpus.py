"""A hostile-input corpus, built here (nothing downloaded): every entry is an upload event
value (plus headers) and what must happen to it: a specific dead-letter ``error-type``, or
``DECIDED`` for images that are valid but unusual."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field

from PIL import Image

DECIDED = "decided"
# limits the corpus is built against (the tests configure the worker with them)
MAX_MESSAGE_BYTES = 4_000_000
MAX_IMAGE_BYTES = 1_000_000
MAX_PIXELS = 40_000_000
MAX_FRAMES = 100


@dataclass(frozen=True)
class Case:
    name: str
    value: bytes | None
    expected: str
    headers: list[tuple[str, bytes]] = field(default_factory=list)

    @property
    def upload_id(self) -> str:
        return f"hostile-{self.name}"


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def photo(size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A small image with structure (gradients), so truncation really cuts pixel data."""
    w, h = size
    img = Image.new("RGB", size)
    img.putdata([((x * 255) // w, (y * 255) // h, ((x ^ y) * 7) % 256)
                 for y in range(h) for x in range(w)])
    return img


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_bomb(side: int = 20_000) -> bytes:
    """A real 1-bit PNG of side x side zero pixels: ~50 KB on the wire, 400 M pixels."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", data)
            + _png_chunk(b"IEND", b""))


def many_frame_gif(frames: int = 2000) -> bytes:
    # consecutive frames differ, or Pillow merges them into one
    imgs = [Image.new("L", (2, 2), 255 * (i % 2)) for i in range(frames)]
    return encode(imgs[0], "GIF", save_all=True, append_images=imgs[1:], duration=10)


def _flip_middle(data: bytes, n: int = 64) -> bytes:
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0x5A for b in data[mid:mid + n]) + data[mid + n:]


def tiff_second_frame_without_width() -> bytes:
    """A valid first frame; the second IFD's ImageWidth tag renamed. Pillow raises a
    TypeError (not an OSError) when counting frames: found by the decoder fuzz test."""
    img = photo((32, 24))
    data = bytearray(encode(img, "TIFF", save_all=True, append_images=[img]))
    first = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[first:first + 2])[0]
    end = first + 2 + 12 * entries
    second = struct.unpack("<I", data[end:end + 4])[0]
    for i in range(struct.unpack("<H", data[second:second + 2])[0]):
        pos = second + 2 + 12 * i
        if struct.unpack("<H", data[pos:pos + 2])[0] == 256:  # ImageWidth
            data[pos:pos + 2] = struct.pack("<H", 0x9999)
    return bytes(data)


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW to display
    return encode(photo(), "JPEG", exif=exif.tobytes())


def event(upload_id: str, image: bytes | None = None, **fields: object) -> bytes:
    doc: dict[str, object] = {"upload_id": upload_id}
    if image is not None:
        doc["image_b64"] = base64.b64encode(image).decode()
    doc.update(fields)
    return json.dumps(doc).encode()


def nested(open_: bytes, close: bytes, depth: int, inner: bytes = b"") -> bytes:
    return open_ * depth + inner + close * depth


def _with_metadata(name: str, image: bytes, metadata: bytes) -> bytes:
    """An event whose metadata is raw JSON text (json.dumps cannot write these)."""
    head = event(f"hostile-{name}", image)[:-1]
    return head + b', "metadata": ' + metadata + b"}"


def image_case(name: str, data: bytes, expected: str) -> Case:
    return Case(name, event(f"hostile-{name}", data), expected)


def build() -> list[Case]:
    base = photo()
    jpeg, png = encode(base, "JPEG", quality=90), encode(base, "PNG")
    webp, gif = encode(base, "WEBP", quality=80), encode(base.convert("P"), "GIF")
    cases = [
        # truncated or corrupt past a valid header: only a full decode finds out
        image_case("truncated-jpeg", jpeg[: len(jpeg) // 2], "corrupt_image"),
        image_case("truncated-png", png[: len(png) // 2], "corrupt_image"),
        image_case("truncated-webp", webp[: len(webp) // 2], "corrupt_image"),
        image_case("truncated-gif", gif[: len(gif) // 2], "corrupt_image"),
        image_case("corrupt-png-data", _flip_middle(png), "corrupt_image"),
        image_case("corrupt-jpeg-data", _flip_middle(jpeg), "corrupt_image"),
        image_case("header-only-jpeg", jpeg[:4], "undecodable_image"),
        image_case("tiff-frame-without-width", tiff_second_frame_without_width(),
                   "corrupt_image"),
        # bombs: tiny on the wire, huge when decoded
        image_case("png-bomb", png_bomb(), "too_many_pixels"),
        image_case("gif-2000-frames", many_frame_gif(), "too_many_frames"),
        image_case("oversized-image", encode(Image.effect_noise((700, 700), 60).convert("RGB"),
                                             "PNG"), "image_too_large"),
        # not images
        image_case("zero-bytes", b"", "empty_image"),
        image_case("random-bytes", bytes(range(256)) * 8, "undecodable_image"),
        image_case("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
                   b'<rect width="10" height="10"/></svg>', "undecodable_image"),
        image_case("html", b"<!doctype html><html><body>hi</body></html>", "undecodable_image"),
        Case("raw-text", b"just some text, no image", "undecodable_image",
             [("upload-id", b"hostile-raw-text")]),
        Case("raw-no-id", b"\xff\xd8\xff\xe0 raw bytes without an id", "missing_upload_id"),
        # broken events
        Case("empty-message", b"", "empty_message"),
        Case("invalid-json", b'{"upload_id": "x", ', "invalid_json"),
        Case("json-array", b"[1, 2, 3]", "invalid_json"),
        Case("missing-upload-id", json.dumps({"image_b64": "AAAA"}).encode(), "missing_field"),
        Case("missing-image", event("hostile-missing-image"), "missing_field"),
        Case("both-sources", event("hostile-both-sources", png, image_url="http://x/a.png"),
             "missing_field"),
        Case("wrong-type-id", json.dumps({"upload_id": 12, "image_b64": "AAAA"}).encode(),
             "wrong_type"),
        Case("wrong-type-metadata", event("hostile-wrong-type-metadata", png, metadata=[1]),
             "wrong_type"),
        Case("bad-created-at", event("hostile-bad-created-at", png, created_at="yesterday"),
             "wrong_type"),
        Case("unknown-field", event("hostile-unknown-field", png, admin=True), "unknown_field"),
        Case("invalid-base64", event("hostile-invalid-base64", None, image_b64="@@not base64@@"),
             "invalid_base64"),
        Case("huge-base64", event("hostile-huge-base64", b"\x00" * (MAX_MESSAGE_BYTES // 4 * 3)),
             "message_too_large"),
        Case("control-chars-id", json.dumps({"upload_id": "a\x00b\nc",
                                             "image_b64": "AAAA"}).encode(),
             "invalid_upload_id"),
        Case("10kb-id", json.dumps({"upload_id": "x" * 10_240, "image_b64": "AAAA"}).encode(),
             "invalid_upload_id"),
        Case("raw-id-not-utf8", png, "invalid_upload_id", [("upload-id", b"\xff\xfe")]),
        # JSON that breaks parsers: nesting that overflows a recursive decoder (one such
        # event used to crash-loop every worker), integers past Python's digit limit
        Case("nested-arrays-100k", _with_metadata("nested-arrays-100k", png,
                                                  b'{"x": ' + nested(b"[", b"]", 100_000) + b"}"),
             "invalid_json"),
        Case("nested-objects-50k", _with_metadata("nested-objects-50k", png,
                                                  nested(b'{"a": ', b"}", 50_000, b"1")),
             "invalid_json"),
        Case("nested-top-level", nested(b"[", b"]", 100_000), "invalid_json"),
        # the event is level 1 and metadata level 2: 31 arrays inside make 33 levels
        Case("nested-just-over-limit", _with_metadata(
            "nested-just-over-limit", png, b'{"x": ' + nested(b"[", b"]", 31) + b"}"),
             "invalid_json"),
        Case("huge-integer", _with_metadata("huge-integer", png, b'{"n": ' + b"9" * 5000 + b"}"),
             "invalid_json"),
        # valid but unusual: decided, never rejected
        image_case("cmyk-jpeg", encode(base.convert("CMYK"), "JPEG"), DECIDED),
        image_case("16bit-png", encode(base.convert("L").convert("I;16"), "PNG"), DECIDED),
        image_case("palette-png", encode(base.convert("P"), "PNG"), DECIDED),
        image_case("alpha-png", encode(base.convert("RGBA"), "PNG"), DECIDED),
        image_case("la-png", encode(base.convert("LA"), "PNG"), DECIDED),
        image_case("grey-jpeg", encode(base.convert("L"), "JPEG"), DECIDED),
        image_case("exif-rotated-jpeg", exif_rotated_jpeg(), DECIDED),
        image_case("animated-gif-few-frames", many_frame_gif(5), DECIDED),
        image_case("webp", webp, DECIDED),
        image_case("tiny-1x1", encode(Image.new("RGB", (1, 1), (9, 9, 9)), "PNG"), DECIDED),
        image_case("panorama", encode(Image.new("RGB", (4000, 20), (200, 10, 10)), "PNG"),
                   DECIDED),
        Case("nested-at-the-limit", _with_metadata(
            "nested-at-the-limit", png, b'{"x": ' + nested(b"[", b"]", 30) + b"}"), DECIDED),
        Case("brackets-inside-strings", event("hostile-brackets-inside-strings", png,
                                              metadata={"s": "[{" * 50_000}), DECIDED),
        Case("huge-float", _with_metadata("huge-float", png, b'{"f": 1e999, "g": -1e999}'),
             DECIDED),
        Case("long-metadata-string", event("hostile-long-metadata-string", png,
                                           metadata={"s": "x" * 1_000_000}), DECIDED),
        Case("long-user-id", event("hostile-long-user-id", png, user_id="u" * 1_000_000),
             DECIDED),
        Case("created-at-year-1", event("hostile-created-at-year-1", png,
                                        created_at="0001-01-01T00:00:00+14:00"), DECIDED),
        Case("created-at-year-9999", event("hostile-created-at-year-9999", png,
                                           created_at="9999-12-31T23:59:59-14:00"), DECIDED),
    ]
    names = [c.name for c in cases]
    assert len(names) == len(set(names))
    return cases
