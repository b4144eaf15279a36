"""The image path of ``triton_models/gpu``: JPEG decoding on the GPU (nvJPEG through
``torchvision.io.decode_jpeg``), resize, crop and normalise there, and the image tower in
fp16 replayed from CUDA graphs captured for fixed batch buckets.

What the GPU decoder does not take (PNG, WebP, GIF, CMYK or EXIF-rotated JPEGs, a JPEG
nvJPEG refuses) is decoded by Pillow on the CPU under the same limits and with the same
``ImageError`` reasons as the CPU models (``core.images``), then joins the same GPU
preprocessing. Without CUDA or torchvision (these tests, a CPU-only node) every image takes
that fallback and the tower runs in fp32 without graphs: the path whose embeddings the
tests hold within cosine 0.999 of the CPU models everywhere, and the GPU test on a GPU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from moderation.contract.errors import ImageError
from moderation.core.images import DecodeLimits, Preprocess, decode_opened, open_image
from moderation.models.bundle import Bundle
from moderation.serving.triton_backend import as_bytes, split_rows

EXIF_ORIENTATION = 0x0112
# torch has no Lanczos: bicubic with antialiasing is the nearest it offers
_MODES = {"nearest": "nearest", "bilinear": "bilinear", "bicubic": "bicubic",
          "lanczos": "bicubic", "box": "area"}


@dataclass(frozen=True)
class GpuOptions:
    device: str = "cuda"  # "cuda:N", or "cpu" (fallback only, fp32, no graphs)
    half: bool = True
    buckets: tuple[int, ...] = (1, 8, 32, 64, 128)
    cuda_graphs: bool = True

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


def options_from(params: dict[str, str], device: str) -> GpuOptions:
    """Options from a model's ``config.pbtxt`` parameters (strings), for ``device``."""
    on_gpu = device.startswith("cuda")
    buckets = tuple(sorted({int(b) for b in params.get("buckets", "1,8,32,64,128").split(",")
                            if b.strip()}))
    return GpuOptions(device, half=on_gpu and params.get("precision", "fp16") == "fp16",
                      buckets=buckets or (1,),
                      cuda_graphs=on_gpu and params.get("cuda_graphs", "true") == "true")


def gpu_decodable(img: Image.Image) -> bool:
    """A JPEG nvJPEG decodes to what Pillow would: YCbCr or greyscale, already upright."""
    return (img.format == "JPEG" and img.mode in ("RGB", "L")
            and img.getexif().get(EXIF_ORIENTATION, 1) == 1)


def _nvjpeg() -> Any:
    try:
        from torchvision.io import ImageReadMode, decode_jpeg
    except Exception:  # no torchvision (it does not import beside the CPU torch here)
        return None
    return lambda data, device: decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


class GpuImages:
    """Encoded images in, L2-normalised float32 embeddings out, on one device."""

    def __init__(self, bundle: Bundle, options: GpuOptions, tower: bool = True) -> None:
        """``tower=False``: decoding and preprocessing only (the TensorRT repository's
        ``image_preprocess`` step, whose plan is the tower)."""
        import torch

        self.options = options
        self.spec: Preprocess = bundle.preprocess_spec
        self.device = torch.device(options.device)
        self.dtype = torch.float16 if options.half else torch.float32
        self.tower: Any = None
        if tower:
            self.tower = bundle.image_tower().to(self.device)
            if options.half:
                self.tower.half()
        self.mean = torch.tensor(self.spec.mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(self.spec.std, device=self.device).view(1, 3, 1, 1)
        self.decode_jpeg = _nvjpeg() if options.on_gpu else None
        self._graphs: dict[int, tuple[Any, Any, Any]] = {}
        if options.cuda_graphs and tower:
            for b in options.buckets:
                self._graphs[b] = self._capture(b)

    # --- decoding ---------------------------------------------------------------------

    def decode(self, items: Sequence[bytes], limits: DecodeLimits) -> list[Any]:
        """Per item: a uint8 ``[3, H, W]`` tensor on the device, or the ``ImageError``."""
        import torch

        out: list[Any] = [None] * len(items)
        on_gpu: list[int] = []
        opened: dict[int, Image.Image] = {}
        for i, data in enumerate(items):
            try:
                img = open_image(data, limits)
            except ImageError as exc:
                out[i] = exc
                continue
            opened[i] = img
            if self.decode_jpeg is not None and gpu_decodable(img):
                on_gpu.append(i)
        for i, tensor in zip(on_gpu, self._decode_on_gpu([items[i] for i in on_gpu]),
                             strict=True):
            out[i] = tensor
        for i, img in opened.items():
            if out[i] is None:  # not for the GPU decoder, or refused by it
                try:
                    rgb = decode_opened(img, self.spec.size)
                except ImageError as exc:
                    out[i] = exc
                    continue
                arr = torch.from_numpy(np.asarray(rgb, np.uint8).copy())
                out[i] = arr.permute(2, 0, 1).to(self.device, non_blocking=True)
        return out

    def _decode_on_gpu(self, items: Sequence[bytes]) -> list[Any]:
        """nvJPEG in one batched call; if the batch fails, each alone, and None for an image
        it refuses (Pillow then decodes it, and names the error if it is corrupt)."""
        import torch

        decode = self.decode_jpeg
        if not items or decode is None:
            return [None] * len(items)
        data = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in items]
        try:
            return list(decode(data, self.options.device))
        except RuntimeError:
            pass
        out = []
        for d in data:
            try:
                out.append(decode(d, self.options.device))
            except RuntimeError:
                out.append(None)
        return out

    # --- preprocessing ----------------------------------------------------------------

    def pixels(self, images: Sequence[Any]) -> Any:
        """uint8 ``[3, H, W]`` tensors to model input ``[B, 3, S, S]``: the shorter side
        resized to S (antialiased), centre crop, scaled and normalised as ``core.images``.
        Images of one size are resized in one call."""
        import torch

        size = self.spec.size
        out = torch.empty((len(images), 3, size, size), device=self.device)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for i, img in enumerate(images):
            by_shape.setdefault((int(img.shape[1]), int(img.shape[2])), []).append(i)
        for (h, w), idx in by_shape.items():
            x = torch.stack([images[i] for i in idx]).float()
            scale = size / min(h, w)
            nh, nw = max(size, int(h * scale)), max(size, int(w * scale))
            if (nh, nw) != (h, w):
                mode = _MODES[self.spec.resample]
                x = torch.nn.functional.interpolate(
                    x, size=(nh, nw), mode=mode,
                    antialias=mode in ("bilinear", "bicubic"),
                    **({} if mode in ("nearest", "area") else {"align_corners": False}))
            top, left = (nh - size) // 2, (nw - size) // 2
            x = x[:, :, top:top + size, left:left + size].round().clamp(0, 255)
            out[idx] = (x / 255.0 - self.mean) / self.std
        return out

    # --- the tower --------------------------------------------------------------------

    def _capture(self, batch: int) -> tuple[Any, Any, Any]:
        import torch

        size = self.spec.size
        static_in = torch.zeros((batch, 3, size, size), device=self.device, dtype=self.dtype)
        stream = torch.cuda.Stream()  # type: ignore[no-untyped-call]
        stream.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(stream):
            for _ in range(3):  # warm-up on a side stream, as capture requires
                self.tower(static_in)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph):
            static_out = self.tower(static_in)
        return graph, static_in, static_out

    def embed_pixels(self, pixels: Any) -> NDArray[Any]:
        """Model input ``[B, 3, S, S]`` (any float dtype, on the device) to float32
        ``[B, D]`` embeddings; batches are padded to the next bucket and replayed."""
        import torch

        outs = []
        largest = self.options.buckets[-1]
        with torch.inference_mode():
            for start in range(0, len(pixels), largest):
                chunk = pixels[start:start + largest].to(self.dtype)
                n = len(chunk)
                if self._graphs:
                    bucket = next(b for b in self.options.buckets if b >= n)
                    graph, static_in, static_out = self._graphs[bucket]
                    static_in[:n].copy_(chunk)
                    graph.replay()
                    emb = static_out[:n].float()
                else:
                    emb = self.tower(chunk).float()
                outs.append(torch.nn.functional.normalize(emb, dim=-1))
            if not outs:
                return np.zeros((0, 0), np.float32)
            return np.asarray(torch.cat(outs).cpu().numpy(), np.float32)


def embed_image_requests(images: GpuImages, batches: Sequence[NDArray[Any]],
                         limits: DecodeLimits) -> list[NDArray[Any] | ImageError]:
    """One embedding matrix per Triton request, or the first error in it (which fails that
    request alone, as on the CPU models). Every request's images decode in one nvJPEG call
    and embed in one pass."""
    items = [[as_bytes(x) for x in b.reshape(-1)] for b in batches]
    decoded = images.decode([x for group in items for x in group], limits)
    results: list[int | ImageError] = []
    keep: list[Any] = []
    offset = 0
    for group in items:
        mine = decoded[offset:offset + len(group)]
        offset += len(group)
        error = next((d for d in mine if isinstance(d, ImageError)), None)
        results.append(len(group) if error is None else error)
        if error is None:
            keep.extend(mine)
    return split_rows(results, images.embed_pixels(images.pixels(keep)) if keep else None)
