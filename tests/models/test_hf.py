"""The real-CLIP path on a tiny random CLIPModel: import-hf, ONNX export, ViT-B/32 shape."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from moderation.contract.errors import BundleError
from moderation.models.bundle import load_bundle
from moderation.models.hf import VIT_B_32, import_hf

TEXTS = ["weapons such as guns or knives", "a dog", "ünïcödé text 🐕"]


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 40, 3), np.uint8))
            for i in range(3)]


def reference(checkpoint: Path) -> tuple[np.ndarray, np.ndarray]:
    """transformers' own get_image_features / get_text_features, L2-normalised."""
    import torch
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    model = CLIPModel.from_pretrained(str(checkpoint)).eval()
    proc = CLIPImageProcessor.from_pretrained(str(checkpoint))
    tok = CLIPTokenizer.from_pretrained(str(checkpoint))
    with torch.no_grad():
        px = proc(images=images(), return_tensors="pt")["pixel_values"]
        img = model.get_image_features(pixel_values=px)
        enc = tok(TEXTS, padding="max_length", max_length=77, truncation=True,
                  return_tensors="pt")
        txt = model.get_text_features(**enc)
    img = getattr(img, "pooler_output", img)
    txt = getattr(txt, "pooler_output", txt)
    norm = lambda t: (t / t.norm(dim=-1, keepdim=True)).numpy()  # noqa: E731
    return norm(img), norm(txt)


def test_imported_bundle_matches_transformers(tiny_hf_checkpoint: Path,
                                              tiny_hf_bundle: Path) -> None:
    bundle = load_bundle(tiny_hf_bundle)
    assert bundle.manifest.embedding_dim == 16
    assert bundle.manifest.image.preprocess.size == 32
    ref_img, ref_txt = reference(tiny_hf_checkpoint)
    np.testing.assert_allclose(bundle.embed_images(images()), ref_img, atol=1e-4)
    np.testing.assert_allclose(bundle.embed_texts(TEXTS), ref_txt, atol=1e-4)


def test_import_rejects_non_clip(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(BundleError, match=r"expected .clip."):
        import_hf(tmp_path, tmp_path / "out")
    with pytest.raises(BundleError, match=r"no config\.json"):
        import_hf(tmp_path / "missing", tmp_path / "out")


def test_vit_b_32_shape_has_the_real_parameter_count() -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    cfg = CLIPConfig(projection_dim=VIT_B_32["projection_dim"],
                     text_config=VIT_B_32["text_config"],
                     vision_config=VIT_B_32["vision_config"])
    with torch.device("meta"):
        model = CLIPModel(cfg)
    n = sum(p.numel() for p in model.parameters())
    assert 151_000_000 < n < 152_000_000  # openai/clip-vit-base-patch32: 151.3 M
    vision = sum(p.numel() for p in model.vision_model.parameters())
    assert 87_000_000 < vision < 88_500_000
