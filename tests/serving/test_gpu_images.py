"""The GPU image path (serving.gpu_images): its CPU-fallback half everywhere, its GPU half
where CUDA and torchvision are present (skipped here, with the reason)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moderation.contract.errors import ImageError
from moderation.core.images import DecodeLimits, decode_image, open_image
from moderation.devtools.bench_images import encoded_uploads, jpeg_uploads
from moderation.models.bundle import Bundle, load_bundle
from moderation.serving.gpu_images import (
    GpuImages,
    GpuOptions,
    embed_image_requests,
    gpu_decodable,
    options_from,
)
from tests.worker import hostile_corpus as hc

REPO = Path(__file__).resolve().parents[2]
LIMITS = DecodeLimits(hc.MAX_IMAGE_BYTES, hc.MAX_PIXELS, hc.MAX_FRAMES)


def _cuda() -> str | None:
    """Why the GPU half cannot run here, or None when it can."""
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device (torch.cuda.is_available() is False)"
    try:
        import torchvision.io  # noqa: F401
    except Exception as exc:
        return f"torchvision does not import ({exc})"
    return None


NO_GPU = _cuda()


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle("demo")


def jpeg(img: Image.Image, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def variety() -> list[bytes]:
    """Photo-like JPEGs and PNGs, the samples, and the modes the GPU decoder leaves to
    Pillow (greyscale, CMYK, EXIF-rotated, palette with transparency)."""
    photo = Image.open(io.BytesIO(jpeg_uploads(1, seed=7)[0]))
    rgba = photo.convert("RGBA")
    rgba.putalpha(128)
    png_alpha = io.BytesIO()
    rgba.save(png_alpha, "PNG")
    return [*encoded_uploads(5), *[p.read_bytes() for p in sorted((REPO / "samples").glob("*"))],
            jpeg(photo.convert("L")), jpeg(photo.convert("CMYK")), hc.exif_rotated_jpeg(),
            png_alpha.getvalue()]


def cpu_models(bundle: Bundle, items: list[bytes]) -> np.ndarray:
    """What triton_models/cpu's clip_image returns for these images."""
    size = bundle.preprocess_spec.size
    return bundle.embed_images([decode_image(x, LIMITS, size) for x in items])


def requests(items: list[bytes]) -> list[np.ndarray]:
    out = []
    for x in items:
        arr = np.empty((1, 1), dtype=object)
        arr[0, 0] = x
        out.append(arr)
    return out


def test_fallback_embeddings_match_the_cpu_models(bundle: Bundle) -> None:
    items = variety()
    images = GpuImages(bundle, GpuOptions("cpu", half=False, cuda_graphs=False))
    results = embed_image_requests(images, requests(items), LIMITS)
    emb = np.concatenate([r for r in results if isinstance(r, np.ndarray)])
    assert emb.shape == (len(items), bundle.dim)
    cosine = (emb * cpu_models(bundle, items)).sum(axis=1)
    assert cosine.min() >= 0.999, f"lowest cosine {cosine.min():.5f} at {cosine.argmin()}"


def test_a_bad_image_fails_its_request_alone_with_the_cpu_models_reason(
        bundle: Bundle) -> None:
    good = jpeg_uploads(2)
    truncated = good[0][: len(good[0]) // 2]
    images = GpuImages(bundle, GpuOptions("cpu", half=False, cuda_graphs=False))
    batches = [*requests([good[0]]), np.array([[good[1]], [truncated]], dtype=object),
               *requests([good[1]])]
    first, bad, last = embed_image_requests(images, batches, LIMITS)
    assert isinstance(bad, ImageError) and bad.reason == "corrupt_image"
    assert isinstance(first, np.ndarray) and isinstance(last, np.ndarray)
    assert float(first[0] @ cpu_models(bundle, [good[0]])[0]) >= 0.999


def hostile_images() -> list[tuple[str, bytes]]:
    """The hostile corpus's image payloads (JSON events with image_b64)."""
    out = []
    for case in hc.build():
        try:
            doc = json.loads(case.value or b"")
            out.append((case.name, base64.b64decode(doc["image_b64"], validate=True)))
        except (ValueError, KeyError, TypeError, RecursionError):  # not an image case
            continue
    return out


@pytest.mark.parametrize(("name", "data"), hostile_images(), ids=lambda v: str(v)[:30])
def test_hostile_images_get_the_cpu_models_outcome(bundle: Bundle, name: str,
                                                   data: bytes) -> None:
    images = GpuImages(bundle, GpuOptions("cpu", half=False, cuda_graphs=False))
    [got] = images.decode([data], LIMITS)
    try:
        decode_image(data, LIMITS, bundle.preprocess_spec.size)
        expected = "decoded"
    except ImageError as exc:
        expected = exc.reason
    assert (got.reason if isinstance(got, ImageError) else "decoded") == expected


def test_only_upright_ycbcr_or_grey_jpegs_go_to_the_gpu_decoder() -> None:
    photo = Image.open(io.BytesIO(jpeg_uploads(1)[0]))
    png = io.BytesIO()
    photo.save(png, "PNG")

    def verdict(data: bytes) -> bool:
        return gpu_decodable(open_image(data, LIMITS))

    assert verdict(jpeg(photo)) and verdict(jpeg(photo.convert("L")))
    assert not verdict(jpeg(photo.convert("CMYK")))
    assert not verdict(hc.exif_rotated_jpeg())
    assert not verdict(png.getvalue())


def test_options_from_the_model_config() -> None:
    gpu = options_from({"buckets": "64, 8,1,8", "precision": "fp16"}, "cuda:1")
    assert gpu == GpuOptions("cuda:1", half=True, buckets=(1, 8, 64), cuda_graphs=True)
    cpu = options_from({"buckets": "1,8"}, "cpu")
    assert not cpu.half and not cpu.cuda_graphs and not cpu.on_gpu


def test_triton_gpu_configs_keep_the_cpu_models_interface() -> None:
    for name in ("clip_image", "clip_text"):
        cpu = (REPO / "triton_models" / "cpu" / name / "config.pbtxt").read_text()
        gpu = (REPO / "triton_models" / "gpu" / name / "config.pbtxt").read_text()
        assert "KIND_GPU" in gpu
        for text in (cpu, gpu):
            assert f'name: "{name}"' in text and "dynamic_batching" in text
        field = "IMAGE" if name == "clip_image" else "TEXT"
        assert f'name: "{field}"' in gpu and "TYPE_STRING" in gpu


@pytest.mark.skipif(NO_GPU is not None, reason=f"GPU half: {NO_GPU}")
def test_gpu_path_matches_the_cpu_models(bundle: Bundle) -> None:
    items = variety()
    images = GpuImages(bundle, GpuOptions("cuda", half=True, cuda_graphs=True))
    results = embed_image_requests(images, requests(items), LIMITS)
    emb = np.concatenate([r for r in results if isinstance(r, np.ndarray)])
    cosine = (emb * cpu_models(bundle, items)).sum(axis=1)
    assert cosine.min() >= 0.999, f"lowest cosine {cosine.min():.5f} at {cosine.argmin()}"
    batched = embed_image_requests(images, [np.array([[x] for x in items], dtype=object)],
                                   LIMITS)[0]
    assert isinstance(batched, np.ndarray)
    assert (batched * emb).sum(axis=1).min() >= 0.999  # one nvJPEG call, one graph replay
