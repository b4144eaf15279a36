"""Builds the torch towers a manifest describes (kept apart so bundle.py imports no torch)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from moderation.contract.errors import BundleError

if TYPE_CHECKING:
    from torch import nn

    from moderation.models.bundle import Bundle


def _hf_clip(bundle: Bundle, ref: str) -> Any:
    from transformers import CLIPModel

    from moderation.models.bundle import resolve_ref

    return CLIPModel.from_pretrained(str(resolve_ref(bundle.dir, ref)), local_files_only=True)


def load_image_tower(bundle: Bundle) -> nn.Module:
    from moderation.models.bundle import resolve_ref
    from moderation.models.towers import CLIPImageTower, EmojiCNN, EmojiCNNEnsemble

    spec = bundle.manifest.image
    if spec.arch == "emoji_cnn":
        from safetensors.torch import load_file

        widths = tuple(spec.params.get("widths", (24, 48, 96, 192)))
        mirror = bool(spec.params.get("mirror_view", False))
        members = int(spec.params.get("members", 1))
        views = tuple(int(s) for s in spec.params.get("view_sizes", ()))
        model: nn.Module = (EmojiCNNEnsemble(members, bundle.dim, widths, mirror, views)
                            if members > 1 else EmojiCNN(bundle.dim, widths, mirror, views))
        state = load_file(str(resolve_ref(bundle.dir, spec.weights)))
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise BundleError(
                f"{bundle.dir}: image weights do not fit the manifest: {exc}") from exc
        return model
    return CLIPImageTower(_hf_clip(bundle, spec.weights))


def load_text_tower(bundle: Bundle) -> nn.Module:
    from moderation.models.bundle import resolve_ref
    from moderation.models.towers import CLIPTextTower, MeanPoolTextTower

    spec = bundle.manifest.text
    if spec.arch == "mean_pool_bert":
        return MeanPoolTextTower(resolve_ref(bundle.dir, spec.weights))
    return CLIPTextTower(_hf_clip(bundle, spec.weights))
