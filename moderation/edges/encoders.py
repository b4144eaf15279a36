"""The encoder boundary: a Protocol and the Triton gRPC client (models/local_encoder.py runs
a bundle in-process behind the same Protocol).

Both take encoded image bytes (decoding happens where the model runs) and UTF-8 strings,
and return L2-normalised float32 ``[B, D]`` matrices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from moderation.contract.errors import EncoderError, EncoderUnavailable, ImageError
from moderation.core.policy import PolicySet
from moderation.core.scoring import PolicyMatrix, compile_policies

if TYPE_CHECKING:
    from moderation.config import TritonSettings


class Encoder(Protocol):
    @property
    def model_name(self) -> str: ...

    def embed_images(self, images: Sequence[bytes]) -> NDArray[Any]: ...

    def embed_texts(self, texts: Sequence[str]) -> NDArray[Any]: ...


def compile_for(encoder: Encoder, policies: PolicySet) -> PolicyMatrix:
    """The policy matrix with every prompt embedded by ``encoder`` (no cache: moderate, eval)."""
    texts = policies.texts()
    return compile_policies(policies, dict(zip(texts, encoder.embed_texts(texts), strict=True)))


def _bytes_tensor(items: Sequence[bytes]) -> NDArray[Any]:
    arr = np.empty((len(items), 1), dtype=object)
    for i, item in enumerate(items):
        arr[i, 0] = item
    return arr


class TritonEncoder:
    """Embeds through Triton's ``clip_image``/``clip_text`` models over gRPC."""

    def __init__(
        self,
        url: str,
        image_model: str = "clip_image",
        text_model: str = "clip_text",
        timeout_s: float = 30.0,
        batch_size: int = 32,
    ) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.url = url
        self.image_model = image_model
        self.text_model = text_model
        self.timeout_s = timeout_s
        self.batch_size = batch_size
        from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE

        self._client = grpcclient.InferenceServerClient(url=url, channel_args=[
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            # reconnect within ~2 s of Triton coming back (gRPC's default backoff grows
            # to 120 s, which would stretch a 30 s outage into minutes)
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.min_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", 2000),
        ])
        self._name: str | None = None

    @classmethod
    def from_settings(cls, settings: TritonSettings) -> TritonEncoder:
        return cls(settings.url, settings.image_model, settings.text_model, settings.timeout_s,
                   settings.batch_size)

    @property
    def model_name(self) -> str:
        """The served bundle's ``name@version``, as the text model reports it."""
        if self._name is None:
            from tritonclient.utils import InferenceServerException

            inp = self._grpc.InferInput("TEXT", [1, 1], "BYTES")
            inp.set_data_from_numpy(_bytes_tensor([b"model name probe"]))
            try:
                result: Any = self._client.infer(
                    self.text_model, [inp], outputs=[self._grpc.InferRequestedOutput("MODEL")],
                    client_timeout=self.timeout_s)
            except InferenceServerException as exc:
                raise _classify(exc, self.url) from exc
            self._name = bytes(result.as_numpy("MODEL").reshape(-1)[0]).decode()
        return self._name

    def ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(self.image_model, client_timeout=2.0))
        except Exception:
            return False

    def _infer(self, model: str, input_name: str, items: Sequence[bytes]) -> NDArray[Any]:
        from tritonclient.utils import InferenceServerException

        out = []
        for start in range(0, len(items), self.batch_size):
            chunk = items[start:start + self.batch_size]
            inp = self._grpc.InferInput(input_name, [len(chunk), 1], "BYTES")
            inp.set_data_from_numpy(_bytes_tensor(chunk))
            try:
                result: Any = self._client.infer(
                    model, [inp], outputs=[self._grpc.InferRequestedOutput("EMBEDDING")],
                    client_timeout=self.timeout_s)
            except InferenceServerException as exc:
                raise _classify(exc, self.url) from exc
            out.append(result.as_numpy("EMBEDDING"))
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 0), np.float32)

    def embed_images(self, images: Sequence[bytes]) -> NDArray[Any]:
        return self._infer(self.image_model, "IMAGE", list(images))

    def embed_texts(self, texts: Sequence[str]) -> NDArray[Any]:
        return self._infer(self.text_model, "TEXT", [t.encode("utf-8") for t in texts])

    def close(self) -> None:
        self._client.close()


_IMAGE_REASONS = ("empty_image", "image_too_large", "too_many_pixels", "too_many_frames",
                  "undecodable_image", "corrupt_image")


def _classify(exc: Exception, url: str) -> EncoderError:
    """Server-side image rejections become ImageError-like; transport failures Unavailable."""
    msg = str(exc)
    for reason in _IMAGE_REASONS:
        if f"{reason}:" in msg:
            return RejectedImage(reason, msg)
    status = getattr(exc, "status", lambda: "")() or ""
    if "UNAVAILABLE" in status or "DEADLINE" in status or "Deadline" in msg:
        return EncoderUnavailable(f"Triton at {url}: {msg}")
    return EncoderError(f"Triton at {url}: {msg}")


class RejectedImage(EncoderError):
    """Triton refused an image as undecodable or over a limit (bad input, not an outage)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.image_error = ImageError(reason, message)
