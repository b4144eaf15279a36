"""Shared logic of the Triton python-backend models in ``triton_models/cpu`` and
``triton_models/gpu`` (whose image path is ``serving.gpu_images``).

The ``model.py`` files stay thin: they translate between ``pb_utils`` tensors and these
functions. The bundle comes from ``MODERATION_MODEL__BUNDLE`` in the server's environment
when set, else the model's ``bundle`` parameter in ``config.pbtxt`` (default ``demo``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from moderation import faults
from moderation.contract.errors import ImageError
from moderation.core.images import DecodeLimits, decode_image
from moderation.models.bundle import Bundle, load_bundle, read_manifest, resolve_bundle_dir

BUNDLE_ENV = "MODERATION_MODEL__BUNDLE"


def param(config: dict[str, Any], key: str, default: str) -> str:
    value = config.get("parameters", {}).get(key, {}).get("string_value", "")
    return str(value) if value else default


def params(config: dict[str, Any]) -> dict[str, str]:
    """Every ``parameters`` entry of a model config, as strings."""
    return {k: str(v.get("string_value", "")) for k, v in config.get("parameters", {}).items()}


def instance_device(args: dict[str, Any]) -> str:
    """The torch device of a model instance: ``cuda:N`` for a KIND_GPU instance."""
    if args.get("model_instance_kind") == "GPU":
        return f"cuda:{args.get('model_instance_device_id', 0)}"
    return "cpu"


def bundle_ref(config: dict[str, Any]) -> str:
    return os.environ.get(BUNDLE_ENV) or param(config, "bundle", "demo")


def embedding_dim(config: dict[str, Any]) -> int:
    return read_manifest(resolve_bundle_dir(bundle_ref(config))).embedding_dim


def add_embedding_output(config: Any) -> Any:
    """Triton auto-complete: ``EMBEDDING`` FP32 [D] with D from the bundle, and ``MODEL``
    (the served bundle's ``name@version``, per row) so clients can tell which model
    answered, whatever environment variable picked the bundle."""
    dim = embedding_dim(config.as_dict())
    config.add_output({"name": "EMBEDDING", "data_type": "TYPE_FP32", "dims": [dim]})
    config.add_output({"name": "MODEL", "data_type": "TYPE_STRING", "dims": [1]})
    return config


def add_pixels_input(config: Any) -> Any:
    """``PIXELS`` FP32 [3, S, S] with S from the bundle's preprocessing."""
    ref = bundle_ref(config.as_dict())
    size = read_manifest(resolve_bundle_dir(ref)).image.preprocess.size
    config.add_input({"name": "PIXELS", "data_type": "TYPE_FP32", "dims": [3, size, size]})
    return config


def model_column(bundle: Bundle, rows: int) -> NDArray[Any]:
    return np.array([[bundle.name.encode()]] * rows, dtype=object).reshape(rows, 1)


def responses(pb_utils: Any, bundle: Bundle,
              results: Sequence[NDArray[Any] | ImageError]) -> list[Any]:
    """One Triton response per request: ``EMBEDDING`` and ``MODEL``, or the image error
    that fails that request alone (``pb_utils`` exists only inside the backend's stub)."""
    out = []
    for result in results:
        if isinstance(result, ImageError):
            error = pb_utils.TritonError(f"{result.reason}: {result}")
            out.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
        else:
            out.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("EMBEDDING", result),
                pb_utils.Tensor("MODEL", model_column(bundle, len(result)))]))
    return out


SMALL_TOWER_PARAMS = 20_000_000


def serving_threads(setting: str, image_params: int) -> int | None:
    """torch intra-op threads for a model instance: a number, ``0`` (torch's default, one
    per core) or ``auto``: one thread for a small image tower, whose forward pass costs less
    than the decoding around it and which shares the cores with it (the demo CNN), and
    torch's default for a large one (a ViT), which needs every core. None = leave as is."""
    if setting == "auto":
        return 1 if image_params < SMALL_TOWER_PARAMS else None
    threads = int(setting or "0")
    return threads if threads > 0 else None


def load_for_serving(config: dict[str, Any], image_model: bool = True,
                     device: str = "cpu") -> Bundle:
    import torch

    bundle = load_bundle(bundle_ref(config), device)
    setting = param(config, "torch_threads", "0")
    # the text model has no image tower to size: "auto" leaves torch's default there
    params = (bundle.image_param_count() if image_model and setting == "auto"
              else SMALL_TOWER_PARAMS)
    threads = serving_threads(setting, params)
    if threads:
        torch.set_num_threads(threads)
    return bundle


def limits_from_env() -> DecodeLimits:
    d = DecodeLimits()
    return DecodeLimits(
        int(os.environ.get("MODERATION_IMAGES__MAX_BYTES", d.max_bytes)),
        int(os.environ.get("MODERATION_IMAGES__MAX_PIXELS", d.max_pixels)),
        int(os.environ.get("MODERATION_IMAGES__MAX_FRAMES", d.max_frames)),
    )


def faults_enabled() -> bool:
    """Fault injection for the poison-record tests (never in production)."""
    return faults.enabled_from_env()


def as_bytes(item: object) -> bytes:
    return item if isinstance(item, bytes) else str(item).encode()


def split_rows(results: Sequence[int | ImageError], embedded: NDArray[Any] | None
               ) -> list[NDArray[Any] | ImageError]:
    """Per request: its rows of ``embedded`` (``results`` gives how many, in order), or its
    error."""
    out: list[NDArray[Any] | ImageError] = []
    offset = 0
    for r in results:
        if isinstance(r, int):
            assert embedded is not None
            out.append(embedded[offset:offset + r])
            offset += r
        else:
            out.append(r)
    return out


def embed_image_requests(
    bundle: Bundle, batches: Sequence[NDArray[Any]], limits: DecodeLimits,
    inject_faults: bool = False,
) -> list[NDArray[Any] | ImageError]:
    """One embedding matrix per request, or the error that fails that request alone.

    All decodable requests go through the image tower in a single forward pass, which is
    what makes Triton's dynamic batching pay off for the python backend.
    """
    pixels: list[NDArray[Any]] = []
    results: list[ImageError | int] = []
    for batch in batches:
        try:
            size = bundle.preprocess_spec.size
            items = [as_bytes(x) for x in batch.reshape(-1)]
            if inject_faults:  # tests only (MODERATION_FAULTS__ENABLED)
                for item in items:
                    faults.inject(item, "stub")
            imgs = [decode_image(item, limits, size) for item in items]
        except ImageError as exc:
            results.append(exc)
            continue
        pixels.append(bundle.pixels(imgs))
        results.append(len(imgs))
    return split_rows(results, bundle.embed_pixels(np.concatenate(pixels)) if pixels else None)


def embed_text_requests(bundle: Bundle, batches: Sequence[NDArray[Any]]) -> list[NDArray[Any]]:
    texts = [[as_bytes(x).decode("utf-8", "replace") for x in b.reshape(-1)] for b in batches]
    flat = [t for group in texts for t in group]
    embedded = bundle.embed_texts(flat, batch_size=max(1, len(flat)))
    out, offset = [], 0
    for group in texts:
        out.append(embedded[offset:offset + len(group)])
        offset += len(group)
    return out


def embed_pixel_requests(bundle: Bundle, batches: Sequence[NDArray[Any]]) -> list[NDArray[Any]]:
    """All requests' pixels through the image tower in one forward pass."""
    sizes = [len(b) for b in batches]
    embedded = bundle.embed_pixels(np.concatenate([np.asarray(b, np.float32) for b in batches]))
    out, offset = [], 0
    for n in sizes:
        out.append(embedded[offset:offset + n])
        offset += n
    return out
