"""A tiny smoke run of the real training code (the committed weights are never retrained)."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from moderation.models.bundle import load_bundle
from moderation.models.towers import EmojiCNN
from moderation.models.training import emoji_data as ed
from moderation.models.training.train import (
    EMPTY_SCENES,
    IMAGE_SIZE,
    STYLE_MIX,
    WIDTHS,
    TrainConfig,
    _outline,
    _restyle,
    class_weights,
    recompute_batch_norm,
    render_dataset,
    sampling_prior,
    soft_targets,
    to_batch,
    train_bundle,
)


def test_rendering_is_seeded() -> None:
    cat = ed.renderable(ed.load_catalogue(), ed.NotoRenderer())[:40]
    w = class_weights(cat, 4.0)
    a_img, a_lab = render_dataset(cat, 24, seed=5, weights=w, workers=1, style_dirs={})
    b_img, b_lab = render_dataset(cat, 24, seed=5, weights=w, workers=1, style_dirs={})
    c_img, _ = render_dataset(cat, 24, seed=6, weights=w, workers=1, style_dirs={})
    assert a_img.shape == (24, IMAGE_SIZE, IMAGE_SIZE, 3)
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_img, c_img)


def test_twin_scenes_show_the_same_emoji_drawn_anew_beside_the_usual_first_twin() -> None:
    cat = ed.renderable(ed.load_catalogue(), ed.NotoRenderer())[:40]
    w = class_weights(cat, 4.0)
    plain_img, plain_lab = render_dataset(cat, 40, seed=3, weights=w, workers=1, style_dirs={})
    img, lab = render_dataset(cat, 40, seed=3, weights=w, workers=1, style_dirs={}, twins=True)
    # the first of each pair is the scene the recipe draws there; the second its twin
    np.testing.assert_array_equal(img[0::2], plain_img[0::2])
    np.testing.assert_array_equal(lab[0::2], plain_lab[0::2])
    np.testing.assert_array_equal(lab[1::2], lab[0::2])
    assert not np.array_equal(lab[1::2], plain_lab[1::2])
    assert all(not np.array_equal(a, b) for a, b in zip(img[0::2], img[1::2], strict=True))


def test_scenes_show_one_to_three_emoji_or_none_as_the_background_class() -> None:
    cat = ed.renderable(ed.load_catalogue(), ed.NotoRenderer())[:40]
    _, labels = render_dataset(cat, 400, seed=1, weights=class_weights(cat, 1.0), workers=1,
                               style_dirs={})
    background = labels[:, 0] == len(cat)
    assert 0.01 < background.mean() < 0.15  # EMPTY_SCENES of them
    assert (labels[background, 1:] == -1).all()
    counts = (labels[~background] >= 0).sum(1)
    assert counts.min() >= 1 and counts.max() <= 3
    assert labels[~background].max() < len(cat)


def test_the_sampling_prior_is_what_the_scenes_show() -> None:
    cat = ed.renderable(ed.load_catalogue(), ed.NotoRenderer())[:40]
    w = np.ones(len(cat))
    w[:4] = 6.0  # four oversampled classes, as policy emoji and look-alikes are
    w /= w.sum()
    prior = sampling_prior(w)
    assert prior.shape == (len(cat) + 1,) and np.isclose(prior.sum(), 1.0)
    assert np.isclose(prior[0] / prior[10], 6.0)
    _, labels = render_dataset(cat, 1500, seed=2, weights=w, workers=1, style_dirs={})
    # the soft targets give each scene a mass of 1, shared by the classes it shows
    mass = soft_targets(labels, len(cat) + 1).numpy().mean(0)
    np.testing.assert_allclose(mass[-1], EMPTY_SCENES, atol=0.015)
    np.testing.assert_allclose(mass[:4].sum(), prior[:4].sum(), atol=0.04)
    np.testing.assert_allclose(mass[4:-1].sum(), prior[4:-1].sum(), atol=0.04)


def test_style_augmentations_keep_the_glyph_shape() -> None:
    glyph = ed.NotoRenderer().glyph("🔪")
    assert glyph is not None
    rng = np.random.default_rng(0)
    for _ in range(40):
        out = _restyle(rng, glyph)
        assert out.mode == "RGBA"
        assert abs(out.width - glyph.width) <= 4 and abs(out.height - glyph.height) <= 4
    line = _outline(rng, glyph)
    ink = np.asarray(line.getchannel("A")) > 0
    assert 0.02 < ink.mean() < 0.6  # strokes, not a filled silhouette
    assert len(np.unique(np.asarray(line.convert("RGB")).reshape(-1, 3), axis=0)) == 1


def test_batch_norm_statistics_are_recomputed_from_the_given_scenes() -> None:
    import torch

    tower = EmojiCNN(384, WIDTHS)
    bn = tower.features[0][1]
    bn.running_mean.fill_(5.0)  # statistics of other weights, as an average's would be
    images = np.random.default_rng(0).integers(0, 256, (40, IMAGE_SIZE, IMAGE_SIZE, 3),
                                               dtype=np.uint8)
    recompute_batch_norm(tower, images, bf16=False, scenes=32, batch=16)
    with torch.no_grad():  # what the first batch-norm sees: the first conv's output
        first = tower.features[0][0](to_batch(images[:32])).float()
    np.testing.assert_allclose(bn.running_mean.numpy(), first.mean((0, 2, 3)).numpy(),
                               rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(("bf16", "members", "tau", "average_from", "twin_weight"),
                         [(False, 1, 0.0, 0.0, 0.0), (True, 1, 1.0, 0.0, 8.0),
                          (True, 2, 1.0, 0.5, 0.0)])
def test_training_smoke_writes_a_loadable_bundle(tmp_path: Path, bf16: bool, members: int,
                                                 tau: float, average_from: float,
                                                 twin_weight: float) -> None:
    cfg = TrainConfig(samples=128, epochs=1, batch_size=32, warmup_steps=1, class_limit=30,
                      workers=1, styles=("noto", "openmoji-line"), bf16=bf16, members=members,
                      prior_correction=tau, average_from=average_from, twin_weight=twin_weight)
    report = train_bundle(tmp_path, cfg)
    assert report["classes"] == 30 and len(report["epoch_loss"]) == 1  # type: ignore[arg-type]
    assert np.isfinite(report["epoch_loss"]).all()  # type: ignore[arg-type]
    bundle = load_bundle(tmp_path)
    assert bundle.manifest.training["config"]["samples"] == 128
    assert bundle.manifest.training["config"]["twin_weight"] == twin_weight
    assert report["styles"] == {n: STYLE_MIX[n] for n in ("noto", "openmoji-line")}
    assert bundle.manifest.image.params.get("members", 1) == members
    assert bundle.image_param_count() == members * sum(
        p.numel() for p in EmojiCNN(384, WIDTHS).parameters())
    from PIL import Image

    emb = bundle.embed_images([Image.new("RGB", (100, 80), (200, 10, 10))])
    assert emb.shape == (1, 384)
    np.testing.assert_allclose(np.linalg.norm(emb), 1.0, atol=1e-5)
    if average_from:  # the same run's last weights are not what was written
        from safetensors.numpy import load_file

        train_bundle(tmp_path / "last", replace(cfg, average_from=0.0))
        averaged, last = (load_file(d / "image.safetensors") for d in (tmp_path,
                                                                      tmp_path / "last"))
        assert averaged.keys() == last.keys()
        assert not np.array_equal(averaged["members.0.proj.weight"],
                                  last["members.0.proj.weight"])


def test_the_train_command_runs_the_recipe_unless_told_otherwise(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from moderation.cli.main import main
    from moderation.models.training import train as train_module

    seen: list[TrainConfig] = []
    monkeypatch.setattr(train_module, "train_bundle",
                        lambda out, cfg: seen.append(cfg) or {"out": str(out)})
    ensembles: list[tuple[TrainConfig, list[int]]] = []
    monkeypatch.setattr(train_module, "train_ensemble",
                        lambda out, cfg, seeds: ensembles.append((cfg, seeds)) or {})
    assert main(["models", "train", "--out", str(tmp_path), "--seeds", "0,1"]) == 0
    assert ensembles == [(TrainConfig(), [0, 1])]
    assert main(["models", "train", "--out", str(tmp_path)]) == 0
    assert main(["models", "train", "--out", str(tmp_path), "--epochs", "2"]) == 0
    assert main(["models", "train", "--out", str(tmp_path), "--no-bf16"]) == 0
    assert main(["models", "train", "--out", str(tmp_path), "--members", "1"]) == 0
    assert main(["models", "train", "--out", str(tmp_path), "--prior-correction", "0.5"]) == 0
    assert main(["models", "train", "--out", str(tmp_path), "--average-from", "0.75"]) == 0
    assert main(["models", "train", "--out", str(tmp_path), "--twin-weight", "8"]) == 0
    assert seen == [TrainConfig(), TrainConfig(epochs=2), TrainConfig(bf16=False),
                    TrainConfig(members=1), TrainConfig(prior_correction=0.5),
                    TrainConfig(average_from=0.75), TrainConfig(twin_weight=8.0)]


def _random_bundle(path: Path, members: int, seed: int) -> None:
    import torch
    from safetensors.torch import save_file

    from moderation.models.bundle import write_manifest
    from moderation.models.towers import EmojiCNNEnsemble
    from moderation.models.training.train import demo_manifest

    torch.manual_seed(seed)
    model = EmojiCNNEnsemble(members, 384, WIDTHS) if members > 1 else EmojiCNN(384, WIDTHS)
    path.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(path / "image.safetensors"))
    write_manifest(path, demo_manifest(10.0 + seed, {"config": {"seed": seed}}, members))


def test_merged_bundles_serve_every_tower_of_every_part(tmp_path: Path) -> None:
    from safetensors.numpy import load_file

    from moderation.models.training.train import merge_bundles

    _random_bundle(tmp_path / "a", 2, 0)
    _random_bundle(tmp_path / "b", 1, 1)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "training.json").write_text('{"config": {"seed": 7}}')  # stale
    merge_bundles(tmp_path / "m", [tmp_path / "a", tmp_path / "b"])
    assert not (tmp_path / "m" / "training.json").exists()  # the parts had no reports
    merged = load_bundle(tmp_path / "m")
    assert merged.manifest.image.params["members"] == 3
    assert merged.manifest.version.endswith("+seeds.0.1")
    assert [r["config"]["seed"] for r in merged.manifest.training["runs"]] == [0, 1]
    w, a, b = (load_file(tmp_path / d / "image.safetensors") for d in ("m", "a", "b"))
    np.testing.assert_array_equal(w["members.1.proj.weight"], a["members.1.proj.weight"])
    np.testing.assert_array_equal(w["members.2.proj.weight"], b["proj.weight"])
    assert len(w) == len(a) + len(b)
    from PIL import Image

    emb = merged.embed_images([Image.new("RGB", (60, 60), (0, 90, 200))])
    np.testing.assert_allclose(np.linalg.norm(emb), 1.0, atol=1e-5)


def test_a_merge_keeps_every_parts_training_report(tmp_path: Path) -> None:
    from moderation.models.training.train import merge_bundles

    for name, seed in (("a", 0), ("b", 3)):
        _random_bundle(tmp_path / name, 1, seed)
        (tmp_path / name / "training.json").write_text(
            json.dumps({"config": {"seed": seed}, "torch": "x"}))
    merge_bundles(tmp_path / "m", [tmp_path / "a", tmp_path / "b"])
    report = json.loads((tmp_path / "m" / "training.json").read_text())
    assert [r["config"]["seed"] for r in report["runs"]] == [0, 3]


def test_a_batch_from_a_tensor_is_the_batch_from_numpy() -> None:
    import torch

    scenes = np.random.default_rng(0).integers(0, 256, (3, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    np.testing.assert_array_equal(to_batch(torch.from_numpy(scenes)).numpy(),
                                  to_batch(scenes).numpy())


def test_the_recipe_writes_the_committed_manifest() -> None:
    """make train's manifest, given the committed run's learned scale and summary, is the
    committed one: served the same way (sizes, views, preprocessing) under the same version."""
    from moderation.models.training.train import demo_manifest

    committed = load_bundle("demo").manifest
    members = int(committed.image.params.get("members", 1))
    written = demo_manifest(committed.logit_scale, committed.training, members)
    assert written.model_dump() == committed.model_dump()
