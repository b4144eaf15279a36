"""The one settings root: frozen, read from ``MODERATION_*`` env vars (nested with ``__``).

Example: ``MODERATION_TRITON__URL=10.0.0.5:8001``, ``MODERATION_MODEL__BUNDLE=/models/clip``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from moderation.core.images import DecodeLimits
from moderation.edges.fetch import FetchPolicy


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
    input_topic: str = Field("uploads", description="upload events consumed")
    decision_topic: str = Field("moderation.decisions", description="decisions published")
    dead_letter_topic: str = Field("moderation.dlq", description="undecidable input, with reason")
    review_topic: str = Field("moderation.review", description="uploads a review-action policy "
                              "matched, with their decision, for a human queue")
    group_id: str = Field("moderation", description="consumer group of the workers")
    client: Literal["confluent-kafka", "kafka-python"] = Field(
        "confluent-kafka", description="the worker's Kafka client: librdkafka (less CPU per "
        "upload) or pure-Python kafka-python")
    session_timeout_ms: int = Field(10_000, gt=0, description="consumer group session timeout")
    max_poll_records: int = Field(256, gt=0, description="records fetched per poll")
    max_message_bytes: int = Field(30 * 1024 * 1024, gt=0,
                                   description="largest upload event accepted (else dead letter)")
    security_protocol: str = Field("PLAINTEXT", description="PLAINTEXT, SSL, SASL_PLAINTEXT, "
                                   "SASL_SSL")
    sasl_mechanism: str | None = Field(None, description="PLAIN, SCRAM-SHA-256, SCRAM-SHA-512")
    sasl_username: str | None = Field(None, description="SASL user")
    sasl_password: SecretStr | None = Field(None, description="SASL password (secret)")
    ssl_cafile: Path | None = Field(None, description="CA bundle for SSL listeners")

    def client_options(self) -> dict[str, object]:
        """Connection options shared by producers, consumers and admin clients."""
        opts: dict[str, object] = {"bootstrap_servers": self.bootstrap_servers.split(","),
                                   "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = (self.sasl_password.get_secret_value()
                                           if self.sasl_password else None)
        if self.ssl_cafile:
            opts["ssl_cafile"] = str(self.ssl_cafile)
        return opts


class RedisSettings(_Section):
    url: str = Field("redis://127.0.0.1:6379/0", description="Redis URL (no password in it)")
    password: SecretStr | None = Field(None, description="Redis password (secret)")
    key_prefix: str = Field("moderation", description="prefix of every key and channel")


class DedupeSettings(_Section):
    enabled: bool = Field(True, description="skip re-publishing decisions already "
                          "acknowledged for the same upload_id and policy version")
    ttl_s: int = Field(86_400, gt=0, description="how long an acknowledged decision is "
                       "remembered (the dedupe window)")


class WorkerSettings(_Section):
    http_host: str = Field("127.0.0.1", description="bind address of /metrics, /healthz, /readyz"
                           " (0.0.0.0 in a pod)")
    http_port: int = Field(9300, ge=0, description="port of /metrics, /healthz, /readyz "
                           "(0 = any free port)")
    max_in_flight: int = Field(512, gt=0, description="undecided messages before the consumer "
                               "pauses its partitions")
    concurrent_batches: int = Field(2, gt=0, description="batches in Triton at once")
    batch_linger_ms: int = Field(5, ge=0, description="wait for a fuller batch at most this long")
    blas_threads: int = Field(1, gt=0, description="BLAS threads for scoring: its matrices are "
                              "small, and idle BLAS threads spin between batches")
    commit_interval_s: float = Field(1.0, gt=0, description="how often acknowledged offsets are "
                                     "committed")
    retry_max_s: float = Field(10.0, gt=0, description="longest backoff while Triton is down")
    drain_timeout_s: float = Field(20.0, ge=0, description="on SIGTERM, how long in-flight "
                                   "work may finish before it is abandoned uncommitted")
    max_attempts: int = Field(3, gt=0, description="times work on one record may start without "
                              "finishing (its worker died, or Triton failed on it alone) before "
                              "it is dead-lettered as poison_record")
    attempts_ttl_s: int = Field(7 * 86_400, gt=0, description="how long those attempt counts "
                                "are kept in Redis")


class RecentSettings(_Section):
    enabled: bool = Field(True, description="workers record every decided upload (embedding, "
                          "scores) in the recent-uploads index the console backtests on")
    max_count: int = Field(100_000, gt=0, description="uploads kept in the recent index")
    max_age_s: float = Field(7 * 86_400.0, gt=0, description="oldest upload kept in the "
                             "recent index, in seconds")
    thumbnails: bool = Field(False, description="also keep a small WebP thumbnail of each "
                             "upload for the console (costs the worker a decode)")
    thumbnail_px: int = Field(96, ge=16, le=512, description="thumbnail's longer side")


class ConsoleToken(_Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.@:-]{1,64}$", description="who, in the audit trail")
    role: Literal["viewer", "editor"]
    token: SecretStr


class ConsoleSettings(_Section):
    host: str = Field("127.0.0.1", description="bind address of the policy console")
    port: int = Field(9400, ge=0, description="port of the policy console (0 = any free)")
    tokens: list[ConsoleToken] = Field(
        default_factory=list, description="bearer tokens, JSON list of {name, role (viewer "
        "or editor), token} (secret: from a Secret in a pod)")
    max_request_bytes: int = Field(1_048_576, gt=0, description="largest request body accepted")
    refresh_s: float = Field(2.0, ge=0, description="the recent index is re-read at most this "
                             "often")


class FaultSettings(_Section):
    enabled: bool = Field(False, description="tests only: images carrying a fault marker kill "
                          "or hang the process handling them (see moderation/faults.py)")


class ImageSettings(_Section):
    max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest encoded image accepted")
    max_pixels: int = Field(40_000_000, gt=0, description="largest width x height decoded")
    max_frames: int = Field(100, gt=0, description="most frames in an animated image")

    def limits(self) -> DecodeLimits:
        return DecodeLimits(self.max_bytes, self.max_pixels, self.max_frames)


class FetchSettings(_Section):
    allowed_hosts: list[str] = Field(
        default_factory=list, description="hosts image_url may name, JSON list; "
        "'*.example.com' matches subdomains; empty = fetching disabled")
    allowed_networks: list[str] = Field(
        default_factory=list, description="CIDRs exempt from the public-address rule, JSON "
        "list (an internal CDN); empty in production")
    max_bytes: int = Field(20 * 1024 * 1024, gt=0, description="largest image fetched")
    timeout_s: float = Field(5.0, gt=0, description="whole fetch, redirects included")
    max_redirects: int = Field(3, ge=0, description="redirects followed, each re-checked")
    concurrency: int = Field(8, gt=0, description="fetches at once per worker")

    def policy(self) -> FetchPolicy:
        return FetchPolicy(tuple(self.allowed_hosts), tuple(self.allowed_networks),
                           self.max_bytes, self.timeout_s, self.max_redirects)


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
    worker: WorkerSettings = WorkerSettings()
    dedupe: DedupeSettings = DedupeSettings()
    images: ImageSettings = ImageSettings()
    fetch: FetchSettings = FetchSettings()
    policies: PolicySettings = PolicySettings()
    dev: DevSettings = DevSettings()
    faults: FaultSettings = FaultSettings()
    recent: RecentSettings = RecentSettings()
    console: ConsoleSettings = ConsoleSettings()
