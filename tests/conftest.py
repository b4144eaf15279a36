"""Shared fixtures: a tiny random HF CLIP checkpoint, bundles, and real tritonserver runs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from moderation.devtools.devstack import TritonPorts

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parent.parent

TINY_CLIP = {
    "projection_dim": 16,
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                    "num_hidden_layers": 2, "max_position_embeddings": 77, "vocab_size": 600},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 4,
                      "num_hidden_layers": 2, "image_size": 32, "patch_size": 8},
}


@pytest.fixture(scope="session")
def tiny_hf_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised CLIPModel written by save_pretrained (no download)."""
    from moderation.models.hf import write_random_clip

    out = tmp_path_factory.mktemp("tiny-clip")
    write_random_clip(out, TINY_CLIP, seed=3)
    return out


@pytest.fixture(scope="session")
def tiny_hf_bundle(tiny_hf_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from moderation.models.hf import import_hf

    out = tmp_path_factory.mktemp("tiny-bundle")
    import_hf(tiny_hf_checkpoint, out, name="tiny-clip")
    return out


def _start_triton(tmp: Path, env: dict[str, str]) -> Iterator[TritonPorts]:
    from moderation.devtools.devstack import start_triton

    proc, ports = start_triton(tmp, env=env)
    try:
        yield ports
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def triton_demo_ports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonPorts]:
    """tritonserver serving triton_models/cpu with the committed demo bundle."""
    yield from _start_triton(tmp_path_factory.mktemp("triton-demo"),
                             {"MODERATION_MODEL__BUNDLE": "demo"})


@pytest.fixture(scope="session")
def triton_demo(triton_demo_ports: TritonPorts) -> str:
    return f"127.0.0.1:{triton_demo_ports.grpc}"


@pytest.fixture(scope="session")
def triton_tiny(tiny_hf_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same model repository serving the imported HF bundle, chosen by env var only."""
    for ports in _start_triton(tmp_path_factory.mktemp("triton-tiny"),
                               {"MODERATION_MODEL__BUNDLE": str(tiny_hf_bundle)}):
        yield f"127.0.0.1:{ports.grpc}"


@pytest.fixture(scope="session")
def demo_bundle():  # type: ignore[no-untyped-def]
    from moderation.models.bundle import load_bundle

    return load_bundle("demo")


@pytest.fixture(scope="session")
def knife_and_dog(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Rendered single-emoji images: a kitchen knife and a dog."""
    import numpy as np

    from moderation.models.training import emoji_data as ed

    out = tmp_path_factory.mktemp("rendered")
    renderer = ed.NotoRenderer()
    rng = np.random.default_rng(11)
    paths = {}
    for stem, char in (("knife", "🔪"), ("dog", "🐕")):
        glyph = renderer.glyph(char)
        assert glyph is not None
        path = out / f"{stem}.png"
        path.write_bytes(ed.encode_image(ed.compose(rng, [glyph], 256, 0.0), "PNG"))
        paths[stem] = path
    return paths


def _serve(start, tmp: Path, address: str) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Start a service on a free port, yield its address, stop it by PID."""
    proc, port = start(tmp)
    try:
        yield address.format(port=port)
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on a free port."""
    from moderation.devtools.devstack import start_redis

    yield from _serve(start_redis, tmp_path_factory.mktemp("redis"),
                      "redis://127.0.0.1:{port}/0")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The Tansu Kafka-protocol broker (memory storage) on a free port."""
    from moderation.devtools.devstack import start_tansu

    yield from _serve(start_tansu, tmp_path_factory.mktemp("tansu"), "127.0.0.1:{port}")
