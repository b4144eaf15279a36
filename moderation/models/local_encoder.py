"""The bundle in this process behind the ``Encoder`` Protocol (tests, ``moderate --local``,
evaluation): no Triton, but torch."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from numpy.typing import NDArray

from moderation.core.images import DecodeLimits, decode_image
from moderation.models.bundle import Bundle


class LocalEncoder:
    """Runs the bundle in this process (tests, ``moderate --local``, evaluation)."""

    def __init__(self, bundle: Bundle, limits: DecodeLimits = DecodeLimits()) -> None:
        self.bundle = bundle
        self.limits = limits

    @property
    def model_name(self) -> str:
        return self.bundle.name

    def embed_images(self, images: Sequence[bytes]) -> NDArray[Any]:
        size = self.bundle.preprocess_spec.size
        return self.bundle.embed_images([decode_image(b, self.limits, size) for b in images])

    def embed_texts(self, texts: Sequence[str]) -> NDArray[Any]:
        return self.bundle.embed_texts(list(texts))
