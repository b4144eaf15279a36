"""Safe image decoding and model preprocessing (Pillow and numpy only, no I/O).

Decoding enforces limits on encoded bytes, pixel count and frame count before Pillow
allocates the full image, applies the EXIF orientation, and flattens any mode (palette,
CMYK, 16-bit, alpha) to RGB on white. Preprocessing matches CLIP: resize the shorter side,
centre-crop, scale to [0, 1], normalise per channel.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps, UnidentifiedImageError

from moderation.contract.errors import ImageError

_T = TypeVar("_T")

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


@dataclass(frozen=True)
class DecodeLimits:
    max_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_frames: int = 100


@dataclass(frozen=True)
class Preprocess:
    """How a bundle turns an RGB image into model input ``[3, size, size]`` float32."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: str = "bicubic"


def _open_checked(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Open (headers only) and enforce every limit before any pixel is decoded."""
    if not data:
        raise ImageError("empty_image", "image is 0 bytes")
    if len(data) > limits.max_bytes:
        raise ImageError("image_too_large",
                         f"image is {len(data)} bytes, limit is {limits.max_bytes}")
    img = Image.open(io.BytesIO(data))
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ImageError("too_many_pixels",
                         f"image is {w}x{h} pixels, limit is {limits.max_pixels}")
    frames = getattr(img, "n_frames", 1)
    if frames > limits.max_frames:
        raise ImageError("too_many_frames",
                         f"image has {frames} frames, limit is {limits.max_frames}")
    return img


def inspect_image(data: bytes, limits: DecodeLimits = DecodeLimits()) -> tuple[str, int, int]:
    """Cheap pre-check without decoding pixels: ``(format, width, height)`` or ``ImageError``.

    Catches empty, oversized, non-image, bomb and many-frame input; a file that is only
    truncated or corrupt past its header passes and fails later, in ``decode_image``.
    """
    return _guarded(lambda: _describe(_open_checked(data, limits)))


def _describe(img: Image.Image) -> tuple[str, int, int]:
    return str(img.format), img.size[0], img.size[1]


def decode_image(data: bytes, limits: DecodeLimits = DecodeLimits(),
                 min_side: int | None = None) -> Image.Image:
    """Decode encoded image bytes to an RGB image, or raise ``ImageError`` with a reason.

    ``min_side``: the caller only needs the shorter side this long; a JPEG is then decoded
    at a reduced DCT scale (1/2, 1/4, 1/8) that keeps at least 3x that, several times
    faster than a full decode and indistinguishable after the model's downscale.
    """
    return _guarded(lambda: _decode(_open_checked(data, limits), min_side))


def open_image(data: bytes, limits: DecodeLimits = DecodeLimits()) -> Image.Image:
    """The image with only its headers read and every limit checked (``ImageError`` else):
    lets a caller choose a decoder (``serving.gpu_images`` sends JPEGs to the GPU)."""
    return _guarded(lambda: _open_checked(data, limits))


def decode_opened(img: Image.Image, min_side: int | None = None) -> Image.Image:
    """``decode_image`` for an image ``open_image`` returned."""
    return _guarded(lambda: _decode(img, min_side))


def _decode(img: Image.Image, min_side: int | None = None) -> Image.Image:
    if min_side and img.format == "JPEG":
        img.draft("RGB", (3 * min_side, 3 * min_side))
    img.load()  # first frame only
    upright: Image.Image = ImageOps.exif_transpose(img) or img
    return to_rgb(upright)


def _guarded(fn: Callable[[], _T]) -> _T:
    """Run ``fn`` mapping every Pillow failure to an ``ImageError`` with a stable reason.

    Our own pixel limit is checked before Pillow's bomb check matters; no
    ``warnings.catch_warnings`` here because it is not thread-safe and workers decode in
    threads.
    """
    try:
        return fn()
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own guard, when ours is set higher
        raise ImageError("too_many_pixels", f"image too large to decode: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("undecodable_image", f"not a decodable image: {exc}") from exc
    except MemoryError:
        raise
    except Exception as exc:
        # Pillow's plugins raise an open set on crafted files past the header (OSError,
        # ValueError, EOFError, but also TypeError, KeyError, struct.error...); anything
        # that escaped here would stop the worker on every redelivery of the upload
        raise ImageError("corrupt_image", f"corrupt or truncated image: "
                         f"{type(exc).__name__}: {exc}") from exc


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to RGB; transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        peak = float(arr.max()) or 1.0
        img = Image.fromarray((arr * (255.0 / max(peak, 255.0))).astype(np.uint8), "L")
    if img.mode == "P" or img.mode == "LA" or "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa", "PA"):
        white = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, img.convert("RGBA")).convert("RGB")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int, resample: str = "bicubic") -> Image.Image:
    """Resize so the shorter side is ``size``, then take the centre ``size`` x ``size``."""
    w, h = img.size
    scale = size / min(w, h)
    # truncation, as torchvision and transformers compute the longer side
    nw, nh = max(size, int(w * scale)), max(size, int(h * scale))
    if (nw, nh) != (w, h):
        # reducing_gap=3: a box pre-reduction by an integer factor when shrinking more than
        # 6x (a 640x480 photo to 64 px), then the real filter; 3x faster there, identical
        # for smaller factors (so CLIP's 224 px stays exact)
        img = img.resize((nw, nh), RESAMPLE[resample], reducing_gap=3.0)
    left, top = (nw - size) // 2, (nh - size) // 2
    return img.crop((left, top, left + size, top + size))


def to_tensor(img: Image.Image, spec: Preprocess) -> NDArray[Any]:
    """An RGB image of ``spec.size`` squared to normalised CHW float32."""
    arr = np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    arr = (arr - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    return np.ascontiguousarray(arr.transpose(2, 0, 1))


def preprocess(img: Image.Image, spec: Preprocess) -> NDArray[Any]:
    return to_tensor(resize_center_crop(to_rgb(img), spec.size, spec.resample), spec)


def solid_png(size: int, rgb: tuple[int, int, int]) -> bytes:
    """A tiny known-good image: the worker's Triton canary, the liveness probe, helm test."""
    buf = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buf, "PNG")
    return buf.getvalue()


def thumbnail(data: bytes, px: int, limits: DecodeLimits = DecodeLimits()) -> bytes:
    """A WebP of at most ``px`` on its longer side, for people looking at uploads; raises
    ``ImageError`` like ``decode_image``."""
    img = decode_image(data, limits, min_side=px // 3 + 1)
    img.thumbnail((px, px), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    img.save(buf, "WEBP", quality=70, method=2)
    return buf.getvalue()
