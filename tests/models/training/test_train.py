"""A tiny smoke run of the real training code (the committed weights are never retrained)."""

from pathlib import Path

import numpy as np
import pytest

from moderation.models.bundle import load_bundle
from moderation.models.training import emoji_data as ed
from moderation.models.training.train import (
    TrainConfig,
    class_weights,
    render_dataset,
    train_bundle,
)


def test_rendering_is_seeded() -> None:
    cat = ed.renderable(ed.load_catalogue(), ed.NotoRenderer())[:40]
    w = class_weights(cat, 4.0)
    a_img, a_lab = render_dataset(cat, 24, seed=5, weights=w, workers=1)
    b_img, b_lab = render_dataset(cat, 24, seed=5, weights=w, workers=1)
    c_img, _ = render_dataset(cat, 24, seed=6, weights=w, workers=1)
    assert a_img.shape == (24, 64, 64, 3)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)
    counts = (a_lab >= 0).sum(1)
    assert counts.min() >= 1 and counts.max() <= 3


@pytest.mark.slow
def test_training_smoke_writes_a_loadable_bundle(tmp_path: Path) -> None:
    cfg = TrainConfig(samples=128, epochs=1, batch_size=32, warmup_steps=1, class_limit=30,
                      workers=1)
    report = train_bundle(tmp_path, cfg)
    assert report["classes"] == 30 and len(report["epoch_loss"]) == 1  # type: ignore[arg-type]
    bundle = load_bundle(tmp_path)
    assert bundle.manifest.training["config"]["samples"] == 128
    from PIL import Image

    emb = bundle.embed_images([Image.new("RGB", (100, 80), (200, 10, 10))])
    assert emb.shape == (1, 384)
    np.testing.assert_allclose(np.linalg.norm(emb), 1.0, atol=1e-5)
