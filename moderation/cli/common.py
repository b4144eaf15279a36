"""What several command groups share: the encoder a command runs against."""

from __future__ import annotations

from moderation.config import Settings
from moderation.contract.errors import ConfigError
from moderation.edges.encoders import Encoder


def encoder_for(settings: Settings, local: bool, bundle: str | None) -> Encoder:
    if local:
        try:
            import torch  # noqa: F401  the models extra; the worker image has none
        except ImportError as exc:
            raise ConfigError("--local runs the model in this process and needs torch: "
                              "pip install 'moderation[models]'") from exc
        from moderation.models.bundle import load_bundle
        from moderation.models.local_encoder import LocalEncoder

        return LocalEncoder(load_bundle(bundle or settings.model.bundle), settings.images.limits())
    from moderation.edges.encoders import TritonEncoder

    return TritonEncoder.from_settings(settings.triton)
