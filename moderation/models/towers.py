"""Encoder towers: the small emoji CNN, MiniLM text, and Hugging Face CLIP image/text.

Every tower maps a batch to L2-normalised float32 embeddings of the bundle's dimension.
Image towers take preprocessed pixels ``[B, 3, S, S]``; text towers take token ids and an
attention mask ``[B, L]`` (tokenisation lives with the bundle, outside the graph, so the
same towers export to ONNX and TensorRT).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _conv_bn(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c),
            nn.ReLU(inplace=True),
            nn.Conv2d(c, c, 3, 1, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


class EmojiCNN(nn.Module):
    """A small ResNet-style image tower (about 2.4 M parameters at the default widths).

    ``mirror_view``: embed the image and its mirror image and average the two, a test-time
    view trained for by drawing half the glyphs mirrored (art styles differ in which way
    things face); it doubles the compute and, measured, adds most on unseen art styles.
    ``view_sizes``: also a test-time view: embed the image resized to each of these sizes
    (bilinear, inside the graph so it exports) and average; empty means the input size only.
    """

    def __init__(self, embed_dim: int = 384, widths: tuple[int, ...] = (32, 64, 128, 256),
                 mirror_view: bool = False, view_sizes: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.mirror_view = mirror_view
        self.view_sizes = view_sizes
        layers: list[nn.Module] = [_conv_bn(3, widths[0], stride=2)]
        c = widths[0]
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(_conv_bn(c, w, stride=2))
            layers.append(_Residual(w))
            c = w
        self.features = nn.Sequential(*layers)
        self.proj = nn.Linear(c, embed_dim)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.view_sizes:
            return self._embed_with_mirror(pixels)
        views = [self._embed_with_mirror(self._resized(pixels, s)) for s in self.view_sizes]
        return F.normalize(torch.stack(views).sum(0), dim=-1)

    @staticmethod
    def _resized(pixels: torch.Tensor, size: int) -> torch.Tensor:
        if pixels.shape[-1] == size and pixels.shape[-2] == size:
            return pixels
        return F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False)

    def _embed_with_mirror(self, pixels: torch.Tensor) -> torch.Tensor:
        if not self.mirror_view:
            return self._embed(pixels)
        image, mirror = self._embed(torch.cat([pixels, torch.flip(pixels, dims=[3])])).chunk(2)
        return F.normalize(image + mirror, dim=-1)

    def _embed(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.features(pixels)
        x = x.mean(dim=(2, 3))
        return F.normalize(self.proj(x), dim=-1)


class EmojiCNNEnsemble(nn.Module):
    """Several EmojiCNNs, trained side by side each against its own loss, served as one:
    the normalised mean of their embeddings. Towers trained apart disagree most on art
    none of them saw, so their average is steadier there than any one of them."""

    def __init__(self, members: int, embed_dim: int, widths: tuple[int, ...],
                 mirror_view: bool = False, view_sizes: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.members = nn.ModuleList(EmojiCNN(embed_dim, widths, mirror_view, view_sizes)
                                     for _ in range(members))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.stack([m(pixels) for m in self.members]).sum(0), dim=-1)


class MeanPoolTextTower(nn.Module):
    """A BERT-style encoder with mean pooling (sentence-transformers' all-MiniLM-L6-v2)."""

    def __init__(self, model_dir: Path) -> None:
        super().__init__()
        from transformers import AutoModel

        self.encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


class CLIPImageTower(nn.Module):
    """The vision half of a Hugging Face ``CLIPModel``: pixels -> projected, normalised."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.vision_model = model.vision_model
        self.visual_projection = model.visual_projection

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        pooled = self.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(self.visual_projection(pooled), dim=-1)


class CLIPTextTower(nn.Module):
    """The text half of a Hugging Face ``CLIPModel``."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.text_model = model.text_model
        self.text_projection = model.text_projection

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        pooled = self.text_model(input_ids=input_ids, attention_mask=attention_mask).pooler_output
        return F.normalize(self.text_projection(pooled), dim=-1)
