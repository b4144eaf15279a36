"""The real tritonserver (from the nvidia-pytriton wheel) serving triton_models/cpu."""

import urllib.request
from pathlib import Path

import numpy as np
import pytest

from moderation.edges.encoders import RejectedImage, TritonEncoder
from moderation.models.bundle import load_bundle
from moderation.models.local_encoder import LocalEncoder
from moderation.models.training.emoji_data import encode_image
from tests.pipeline_helpers import demo_model_name

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def sample_images(n: int = 5) -> list[bytes]:
    from PIL import Image

    rng = np.random.default_rng(5)
    out = []
    for i in range(n):
        img = Image.fromarray(rng.integers(0, 256, (60 + 10 * i, 80, 3), np.uint8))
        out.append(encode_image(img, "JPEG" if i % 2 else "PNG"))
    return out


TEXTS = ["weapons such as guns or knives", "a dog playing", "🍺 beer"]


def test_demo_bundle_served_equals_in_process(triton_demo: str, demo_bundle) -> None:  # type: ignore[no-untyped-def]
    remote = TritonEncoder(triton_demo)
    local = LocalEncoder(demo_bundle)
    imgs = sample_images()
    served = remote.embed_images(imgs)
    assert served.shape == (len(imgs), 384) and served.dtype == np.float32
    np.testing.assert_allclose(served, local.embed_images(imgs), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(served, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(remote.embed_texts(TEXTS), local.embed_texts(TEXTS), atol=1e-5)


def test_output_dims_completed_from_manifest(triton_demo: str) -> None:
    enc = TritonEncoder(triton_demo)
    cfg = enc._client.get_model_config("clip_image", as_json=True)["config"]
    assert cfg["max_batch_size"] == 64 and "dynamic_batching" in cfg
    assert cfg["output"][0]["dims"] == ["384"]
    assert cfg["instance_group"][0]["kind"] == "KIND_CPU"


def test_concurrent_requests_are_batched(triton_demo: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    enc = TritonEncoder(triton_demo, batch_size=1)
    imgs = sample_images(8) * 4
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda b: enc.embed_images([b]), imgs))
    assert all(r.shape == (1, 384) for r in results)
    stats = enc._client.get_inference_statistics("clip_image", as_json=True)
    s = stats["model_stats"][0]
    assert int(s["inference_count"]) >= 32
    assert int(s["execution_count"]) < int(s["inference_count"])  # some requests merged


def test_bad_image_fails_only_its_request(triton_demo: str) -> None:
    enc = TritonEncoder(triton_demo)
    with pytest.raises(RejectedImage) as exc:
        enc.embed_images([b"definitely not an image"])
    assert exc.value.reason == "undecodable_image"
    assert enc.embed_images(sample_images(1)).shape == (1, 384)


def test_hf_bundle_served_by_env_var_matches_transformers_path(
        triton_tiny: str, tiny_hf_bundle: Path) -> None:
    remote = TritonEncoder(triton_tiny)
    local = LocalEncoder(load_bundle(tiny_hf_bundle))
    imgs = sample_images()
    np.testing.assert_allclose(remote.embed_images(imgs), local.embed_images(imgs), atol=1e-4)
    np.testing.assert_allclose(remote.embed_texts(TEXTS), local.embed_texts(TEXTS), atol=1e-4)
    # the output dims follow the swapped bundle, with no config edit
    cfg = remote._client.get_model_config("clip_text", as_json=True)["config"]
    assert cfg["output"][0]["dims"] == ["16"]


def test_prometheus_metrics_on_cpu(triton_demo: str, triton_demo_ports) -> None:  # type: ignore[no-untyped-def]
    TritonEncoder(triton_demo).embed_images(sample_images(2))
    url = f"http://127.0.0.1:{triton_demo_ports.metrics}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    assert 'nv_inference_count{model="clip_image",version="1"}' in text


def test_served_model_name_is_the_bundle_actually_loaded(triton_demo: str, triton_tiny: str,
                                                          demo_bundle) -> None:  # type: ignore[no-untyped-def]
    # the prompt-embedding cache is keyed by this name, so it must follow the env var
    assert TritonEncoder(triton_demo).model_name == demo_bundle.name == demo_model_name()
    assert TritonEncoder(triton_tiny).model_name == "tiny-clip@1"
    assert LocalEncoder(demo_bundle).model_name == demo_bundle.name


def test_pixels_model_is_the_bare_image_tower(triton_demo: str, demo_bundle) -> None:  # type: ignore[no-untyped-def]
    """clip_image_pixels (what `bench` measures as the encoder's limit) gives the same
    embeddings as clip_image for the same images, preprocessing done by the client."""
    import tritonclient.grpc as grpcclient

    from moderation.core.images import decode_image

    imgs = sample_images(4)
    pixels = demo_bundle.pixels([decode_image(b) for b in imgs]).astype(np.float32)
    client = grpcclient.InferenceServerClient(triton_demo)
    inp = grpcclient.InferInput("PIXELS", list(pixels.shape), "FP32")
    inp.set_data_from_numpy(pixels)
    result = client.infer("clip_image_pixels", [inp])
    np.testing.assert_allclose(result.as_numpy("EMBEDDING"),
                               TritonEncoder(triton_demo).embed_images(imgs), atol=1e-5)
