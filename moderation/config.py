"""The one settings root: frozen, read from ``MODERATION_*`` env vars (nested with ``__``).

Example: ``MODERATION_TRITON__URL=10.0.0.5:8001``, ``MODERATION_MODEL__BUNDLE=/models/clip``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from moderation.images import DecodeLimits


def _default_state_dir() -> Path:
    import os

    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "moderation"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelSettings(_Section):
    bundle: str = Field("demo", description="bundle name (demo) or directory served and used")


class TritonSettings(_Section):
    url: str = Field("127.0.0.1:8001", description="Triton gRPC address host:port")
    image_model: str = Field("clip_image", description="Triton model for encoded images")
    text_model: str = Field("clip_text", description="Triton model for UTF-8 texts")
    timeout_s: float = Field(30.0, gt=0, description="per-request timeout in seconds")
    batch_size: int = Field(32, gt=0, description="client-side batch per request")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap host:port list")


class RedisSettings(_Section):
    url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL")


class ImageSettings(_Section):
    max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest encoded image accepted")
    max_pixels: int = Field(40_000_000, gt=0, description="largest width x height decoded")
    max_frames: int = Field(100, gt=0, description="most frames in an animated image")

    def limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_bytes, self.max_pixels, self.max_frames)


class PolicySettings(_Section):
    dir: Path = Field(Path("policies"), description="directory of policy YAML files")


class DevSettings(_Section):
    state_dir: Path = Field(default_factory=_default_state_dir,
                            description="PIDs, logs and ports of the embedded stack")
    model_repository: Path | None = Field(
        None, description="Triton model repository (default: the repo's triton_models/cpu)")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MODERATION_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    model: ModelSettings = ModelSettings()
    triton: TritonSettings = TritonSettings()
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    images: ImageSettings = ImageSettings()
    policies: PolicySettings = PolicySettings()
    dev: DevSettings = DevSettings()
