"""scripts/gpu-train.sh's parts: the training pack drawn here, and training from it on a
machine without the Noto font, the CLDR files or MiniLM (here: the CPU, on a tiny run)."""

import argparse
from pathlib import Path

import numpy as np
import pytest

from moderation.devtools import train_pack
from moderation.models.bundle import load_bundle
from moderation.models.training.train import (
    TrainConfig,
    class_weights,
    local_sources,
    prototypes,
    render_dataset,
)

STYLES = ("noto", "openmoji-line")
SMALL = TrainConfig(samples=96, epochs=1, batch_size=32, warmup_steps=1, class_limit=30,
                    workers=1, styles=STYLES, members=2)


@pytest.fixture(scope="module")
def small_pack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pack") / ".gpu-train"
    train_pack.pack(out, STYLES, class_limit=30, wheels=False)
    return out


def test_the_pack_is_complete_and_names_what_it_holds(small_pack: Path) -> None:
    manifest = train_pack.check(small_pack)
    assert manifest["ok"], manifest["problems"]
    (next((small_pack / "glyphs" / "openmoji-line").glob("*.webp"))).unlink()
    try:
        problems = train_pack.check(small_pack)["problems"]
        assert any("glyphs/openmoji-line" in p for p in problems)  # type: ignore[union-attr]
    finally:  # put it back for the other tests: the module's pack is shared
        train_pack.pack(small_pack, STYLES, class_limit=30, wheels=False)


def test_scenes_drawn_from_the_pack_are_the_scenes_drawn_here(small_pack: Path) -> None:
    local = local_sources(SMALL)
    packed, embed_texts = train_pack.sources(small_pack, SMALL)
    assert [e.char for e in packed.catalogue] == [e.char for e in local.catalogue]
    assert packed.catalogue == local.catalogue
    weights = class_weights(local.catalogue, SMALL.focus_weight)
    here = render_dataset(local.catalogue, 64, 3, weights, 1, local.style_dirs)
    there = render_dataset(packed.catalogue, 64, 3, weights, 1, packed.style_dirs)
    np.testing.assert_array_equal(here[1], there[1])
    np.testing.assert_array_equal(here[0], there[0])  # lossless glyphs: the same pixels
    from moderation.models.bundle import Bundle
    from moderation.models.training.train import demo_manifest

    text = Bundle(small_pack, demo_manifest(1.0, {})).embed_texts
    np.testing.assert_array_equal(prototypes(packed.catalogue, embed_texts),
                                  prototypes(local.catalogue, text))


@pytest.mark.slow
def test_training_from_the_pack_writes_a_loadable_bundle(small_pack: Path,
                                                         tmp_path: Path) -> None:
    cfg = train_pack._config(argparse.Namespace(
        styles=",".join(STYLES), samples=96, epochs=1, batch_size=32, class_limit=30,
        workers=1, threads=None, device="cpu", members=None))
    assert cfg.threads == train_pack.GPU_RECIPE["threads"] and cfg.device == "cpu"
    assert cfg.members == TrainConfig().members  # the recipe's, once per seed
    report = train_pack.train(small_pack, tmp_path, cfg, seeds=(0, 1))
    runs: list[dict[str, object]] = report["runs"]  # type: ignore[assignment]
    assert all(np.isfinite(r["epoch_loss"]).all() for r in runs)  # type: ignore[call-overload]
    bundle = load_bundle(tmp_path)
    assert bundle.manifest.image.params["members"] == 4
    assert bundle.manifest.version.endswith("+seeds.0.1")
    assert not (tmp_path / "seed-0").exists()  # merged, then removed
    from PIL import Image

    emb = bundle.embed_images([Image.new("RGB", (90, 70), (20, 200, 10))])
    np.testing.assert_allclose(np.linalg.norm(emb), 1.0, atol=1e-5)


def test_unpack_installs_the_wheels_with_the_standard_library(tmp_path: Path) -> None:
    import zipfile

    pack = tmp_path / "pack"
    (pack / "wheels").mkdir(parents=True)
    with zipfile.ZipFile(pack / "wheels" / "demo-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("demo/__init__.py", "VALUE = 7\n")
    assert train_pack.main(["unpack", "--pack", str(pack), "--dest", str(tmp_path / "d")]) == 0
    assert (tmp_path / "d" / "site" / "demo" / "__init__.py").read_text() == "VALUE = 7\n"
