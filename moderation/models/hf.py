"""Hugging Face CLIP checkpoints as bundles: ``import-hf`` and the random ViT-B/32 bundle.

``import_hf`` copies a local checkpoint directory (the layout of
``openai/clip-vit-base-patch32``: config.json, weights, tokenizer and preprocessor files)
into a bundle, so the Triton models serve it unchanged. Nothing is downloaded.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from moderation.contract.errors import BundleError
from moderation.models.bundle import (
    ImageTowerSpec,
    Manifest,
    PreprocessSpec,
    TextTowerSpec,
    write_manifest,
)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_PIL_RESAMPLE = {2: "bilinear", 3: "bicubic", 1: "lanczos", 4: "box"}
_COPY_SUFFIXES = (".json", ".txt", ".safetensors", ".bin", ".model")


def _preprocess_from(src: Path, config: dict[str, Any]) -> PreprocessSpec:
    image_size = int(config.get("vision_config", {}).get("image_size", 224))
    path = src / "preprocessor_config.json"
    if not path.exists():
        return PreprocessSpec(size=image_size, mean=CLIP_MEAN, std=CLIP_STD)
    pre = json.loads(path.read_text())
    crop = pre.get("crop_size", image_size)
    size = int(crop.get("height", image_size) if isinstance(crop, dict) else crop)
    mean = tuple(pre.get("image_mean", CLIP_MEAN))
    std = tuple(pre.get("image_std", CLIP_STD))
    resample = _PIL_RESAMPLE.get(int(pre.get("resample", 3)), "bicubic")
    return PreprocessSpec(size=size, mean=mean, std=std, resample=resample)


def import_hf(src: Path, out: Path, name: str | None = None, version: str = "1") -> Manifest:
    """Copy a local HF CLIP checkpoint into a bundle at ``out`` and write its manifest."""
    config_path = src / "config.json"
    if not config_path.exists():
        raise BundleError(f"{src}: not a Hugging Face checkpoint (no config.json)")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "clip":
        raise BundleError(f"{src}: model_type is {config.get('model_type')!r}, expected 'clip'")
    weights = [p for p in src.iterdir() if p.suffix in (".safetensors", ".bin")]
    if not weights:
        raise BundleError(f"{src}: no weights (*.safetensors or *.bin)")
    tokenizer_files = {"tokenizer.json", "vocab.json"}
    if not any((src / f).exists() for f in tokenizer_files):
        raise BundleError(f"{src}: no tokenizer files (tokenizer.json or vocab.json+merges.txt)")
    hf_dir = out / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and p.suffix in _COPY_SUFFIXES:
            shutil.copy2(p, hf_dir / p.name)
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(str(hf_dir), local_files_only=True)
    text_cfg = config.get("text_config", {})
    manifest = Manifest(
        name=name or src.name,
        version=version,
        description=f"Hugging Face CLIP checkpoint imported from {src.name}",
        embedding_dim=int(model.config.projection_dim),
        logit_scale=float(model.logit_scale.detach().exp()),
        image=ImageTowerSpec(arch="hf_clip", weights="hf",
                             preprocess=_preprocess_from(src, config)),
        text=TextTowerSpec(arch="hf_clip", weights="hf", tokenizer="hf",
                           max_length=int(text_cfg.get("max_position_embeddings", 77)),
                           pad_to_max_length=True),
    )
    write_manifest(out, manifest)
    return manifest


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs, strict=True)}


def write_byte_level_tokenizer(out: Path) -> None:
    """A CLIP tokenizer with the byte alphabet and no merges (one token per character).

    Real CLIP vocabularies cannot be fetched here; for random-weight benchmark bundles and
    tests the token ids only need to be valid, and padding to 77 keeps compute identical.
    """
    chars = list(_bytes_to_unicode().values())
    vocab = {tok: i for i, tok in enumerate([*chars, *(c + "</w>" for c in chars)])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(vocab_file=str(out / "vocab.json"), merges_file=str(out / "merges.txt"),
                        model_max_length=77)
    tok.save_pretrained(str(out))


VIT_B_32 = {
    "projection_dim": 512,
    "text_config": {"hidden_size": 512, "intermediate_size": 2048, "num_attention_heads": 8,
                    "num_hidden_layers": 12, "max_position_embeddings": 77,
                    "vocab_size": 49408},
    "vision_config": {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
                      "num_hidden_layers": 12, "image_size": 224, "patch_size": 32},
}


def write_random_clip(out: Path, arch: dict[str, Any], seed: int = 0) -> None:
    """Save a randomly initialised ``CLIPModel`` of the given shape with a tokenizer."""
    import torch
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(seed)
    write_byte_level_tokenizer(out)
    vocab = json.loads((out / "vocab.json").read_text())
    text_cfg = {**arch["text_config"], "bos_token_id": vocab["<|startoftext|>"],
                "eos_token_id": vocab["<|endoftext|>"], "pad_token_id": vocab["<|endoftext|>"]}
    cfg = CLIPConfig(projection_dim=arch["projection_dim"], text_config=text_cfg,
                     vision_config=arch["vision_config"])
    model: Any = CLIPModel(cfg)
    model.eval().save_pretrained(str(out))
    size = int(arch["vision_config"].get("image_size") or 224)
    preprocessor = {
        "crop_size": {"height": size, "width": size}, "do_center_crop": True,
        "do_normalize": True, "do_rescale": True, "do_resize": True,
        "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD),
        "image_processor_type": "CLIPImageProcessor", "resample": 3,
        "rescale_factor": 1 / 255, "size": {"shortest_edge": size},
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))


def init_random(out: Path, arch_name: str = "ViT-B-32", seed: int = 0) -> Manifest:
    """A bundle with the real ViT-B/32 CLIP shape and random weights (throughput work)."""
    if arch_name != "ViT-B-32":
        raise BundleError(f"unknown arch {arch_name!r}; known: ViT-B-32")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        write_random_clip(Path(tmp), VIT_B_32, seed)
        return import_hf(Path(tmp), out, name="clip-vit-b-32-random", version="1")
