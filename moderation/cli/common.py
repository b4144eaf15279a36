"""What several command groups share: the encoder a command runs against."""

from __future__ import annotations

from moderation.config import Settings
from moderation.edges.encoders import Encoder


def encoder_for(settings: Settings, local: bool, bundle: str | None) -> Encoder:
    if local:
        from moderation.models.bundle import load_bundle
        from moderation.models.local_encoder import LocalEncoder

        return LocalEncoder(load_bundle(bundle or settings.model.bundle), settings.images.limits())
    from moderation.edges.encoders import TritonEncoder

    return TritonEncoder.from_settings(settings.triton)
