"""Whether Triton is healthy, told by embedding a known-good image: a failed call could be
an outage or an upload that breaks Triton, and the two look alike until the canary
embeds again."""

from __future__ import annotations

import logging
import threading
import time

from moderation.contract.errors import EncoderError, EncoderUnavailable
from moderation.core.images import solid_png
from moderation.edges.encoders import Encoder
from moderation.edges.metrics import Metrics

log = logging.getLogger(__name__)


# a known-good image: when it embeds, Triton is healthy, so a failure just before or after
# it was about the uploads sent, not an outage
CANARY = solid_png(16, (128, 128, 128))


def error_kind(exc: EncoderError) -> str:
    return "unavailable" if isinstance(exc, EncoderUnavailable) else "other"


class TritonGate:
    def __init__(self, encoder: Encoder, metrics: Metrics, retry_max_s: float,
                 abandon: threading.Event) -> None:
        self.encoder = encoder
        self.metrics = metrics
        self.retry_max_s = retry_max_s
        self._abandon = abandon  # set at shutdown: stop waiting
        self._ok_at = 0.0  # last time an embed succeeded (0: unknown)
        self.failing = False  # readiness: Triton is down as far as this worker knows

    def succeeded(self) -> None:
        self._ok_at = time.monotonic()

    def failed(self, exc: EncoderError) -> None:
        self.metrics.triton_errors.labels(error_kind(exc)).inc()
        self._ok_at = 0.0

    def await_healthy(self, first_error: Exception | None = None) -> bool:
        """Until a known-good image embeds (Triton healthy); False when abandoned. Skipped
        when an embed succeeded within the last second."""
        if time.monotonic() - self._ok_at < 1.0:  # zeroed by any failed call
            return True
        backoff = 0.1
        while not self._abandon.is_set():
            try:
                self.encoder.embed_images([CANARY])
            except EncoderError as exc:
                self.metrics.triton_errors.labels(error_kind(exc)).inc()
                if not self.failing:
                    log.warning("Triton call failed; waiting until it embeds a known-good "
                                "image, nothing is committed meanwhile: %s",
                                first_error or exc)
                self.failing = True
                self._abandon.wait(backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            if self.failing:
                log.info("Triton answers again")
                self.failing = False
            self._ok_at = time.monotonic()
            return True
        return False
