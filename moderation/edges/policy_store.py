"""Policy sets in Redis: integer versions, atomic switch, change notification, text cache.

Keys (prefix configurable, default ``moderation``):
    {p}:policies:next       INCR counter for new versions
    {p}:policies:v{N}       the set: policies, embedding model, prompt embeddings (JSON)
    {p}:policies:current    N of the active set; switched in the same MULTI as v{N} is written
    {p}:policies:history    the audit trail: one JSON entry per applied version (who, when,
                            why, rollback of which), appended in that same MULTI; nothing
                            in this package edits or deletes it
    {p}:policies:changed    pub/sub channel; the message is N
    {p}:emb:{model}:{sha256(text)}   cached float32 text embedding
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from moderation.config import RedisSettings
from moderation.contract.errors import ModerationError
from moderation.core.policy import Policy, PolicySet
from moderation.core.scoring import PolicyMatrix, compile_policies
from moderation.edges.encoders import Encoder


class StoreError(ModerationError):
    """The policy store cannot be used (Redis down, or no policy set applied yet)."""


@dataclass(frozen=True)
class StoredPolicySet:
    version: int
    model: str
    policies: PolicySet
    embeddings: Mapping[str, NDArray[Any]]

    def matrix(self) -> PolicyMatrix:
        return compile_policies(self.policies, self.embeddings)


@dataclass(frozen=True)
class Applied:
    """One entry of the audit trail: which version was applied, when, by whom and why."""

    version: int
    applied_at: str  # RFC 3339, UTC
    author: str
    message: str
    model: str
    policies: tuple[str, ...]
    rollback_of: int | None = None  # the earlier version this one restores


class PolicyStore(Protocol):
    def save(self, policies: PolicySet, model: str, embeddings: Mapping[str, NDArray[Any]],
             author: str = "", message: str = "", rollback_of: int | None = None) -> int: ...

    def current_version(self) -> int | None: ...

    def load(self, version: int | None = None) -> StoredPolicySet: ...


def _encode(v: NDArray[Any]) -> str:
    return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()


def _decode(s: str | bytes) -> NDArray[Any]:
    return np.frombuffer(base64.b64decode(s), "<f4").copy()


class RedisPolicyStore:
    def __init__(self, url: str, prefix: str = "moderation", timeout_s: float = 5.0,
                 password: str | None = None) -> None:
        import redis

        self._redis = redis
        self.url = url
        self.prefix = prefix
        self.client = redis.Redis.from_url(url, socket_timeout=timeout_s,
                                           socket_connect_timeout=timeout_s, password=password)

    @classmethod
    def from_settings(cls, settings: RedisSettings) -> RedisPolicyStore:
        password = settings.password.get_secret_value() if settings.password else None
        return cls(settings.url, settings.key_prefix, password=password)

    @property
    def channel(self) -> str:
        return f"{self.prefix}:policies:changed"

    def _call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._redis.RedisError as exc:
            raise StoreError(f"Redis at {self.url}: cannot {what}: {exc}") from exc

    def save(self, policies: PolicySet, model: str, embeddings: Mapping[str, NDArray[Any]],
             author: str = "", message: str = "", rollback_of: int | None = None) -> int:
        """Store a new version, record it in the audit trail and make it current, atomically;
        then notify workers."""
        version = int(self._call("allocate a version", self.client.incr,
                                 f"{self.prefix}:policies:next"))
        entry = Applied(version, datetime.now(UTC).isoformat(timespec="seconds"), author,
                        message, model, policies.names, rollback_of)
        doc = {
            "version": version,
            "model": model,
            "policies": [p.model_dump(mode="json") for p in policies.policies],
            "embeddings": {t: _encode(embeddings[t]) for t in policies.texts()},
        }
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"{self.prefix}:policies:v{version}", json.dumps(doc))
        pipe.set(f"{self.prefix}:policies:current", version)
        pipe.rpush(f"{self.prefix}:policies:history", json.dumps(asdict(entry)))
        pipe.publish(self.channel, str(version))
        self._call("store the policy set", pipe.execute)
        return version

    def current_version(self) -> int | None:
        raw = self._call("read the current version", self.client.get,
                         f"{self.prefix}:policies:current")
        return int(raw) if raw is not None else None

    def load(self, version: int | None = None) -> StoredPolicySet:
        version = version if version is not None else self.current_version()
        if version is None:
            raise StoreError("no policy set has been applied yet: moderation policies apply DIR")
        raw = self._call("read the policy set", self.client.get,
                         f"{self.prefix}:policies:v{version}")
        if raw is None:
            raise StoreError(f"policy set version {version} is missing from Redis")
        doc = json.loads(raw)
        policies = PolicySet(policies=tuple(Policy.model_validate(p) for p in doc["policies"]))
        emb = {t: _decode(v) for t, v in doc["embeddings"].items()}
        return StoredPolicySet(int(doc["version"]), str(doc["model"]), policies, emb)

    def history(self) -> list[Applied]:
        """Every applied version, oldest first."""
        raw = self._call("read the policy history", self.client.lrange,
                         f"{self.prefix}:policies:history", 0, -1)
        out = []
        for item in raw:
            doc = json.loads(item)
            out.append(Applied(**{**doc, "policies": tuple(doc["policies"])}))
        return out

    def rollback(self, version: int, author: str = "", message: str = "") -> int:
        """Make an earlier version's set current again, as a new version (prompt embeddings
        as stored with it, so no encoder is needed); workers switch as on any apply."""
        old = self.load(version)
        return self.save(old.policies, old.model, old.embeddings, author,
                         message or f"rollback to version {version}", rollback_of=version)

    def notifications(self, timeout_s: float = 1.0) -> Iterator[int | None]:
        """Yields a version on each change notification, None after each quiet timeout."""
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)  # type: ignore[no-untyped-call]
        self._call("subscribe", pubsub.subscribe, self.channel)
        try:
            while True:
                msg = self._call("listen", pubsub.get_message, True, timeout_s)
                yield int(msg["data"]) if msg else None
        finally:
            pubsub.close()

    # --- text-embedding cache ----------------------------------------------------------

    def _cache_key(self, model: str, text: str) -> str:
        return f"{self.prefix}:emb:{model}:{hashlib.sha256(text.encode()).hexdigest()}"

    def cached_embeddings(self, model: str, texts: Sequence[str]) -> dict[str, NDArray[Any]]:
        if not texts:
            return {}
        keys = [self._cache_key(model, t) for t in texts]
        values = self._call("read the embedding cache", self.client.mget, keys)
        return {t: _decode(v) for t, v in zip(texts, values, strict=True) if v is not None}

    def cache_embeddings(self, model: str, embeddings: Mapping[str, NDArray[Any]]) -> None:
        if embeddings:
            self._call("write the embedding cache", self.client.mset,
                       {self._cache_key(model, t): _encode(v) for t, v in embeddings.items()})


def embed_prompts(texts: Sequence[str], encoder: Encoder, store: RedisPolicyStore
                  ) -> tuple[str, dict[str, NDArray[Any]]]:
    """The encoder's model name and every text's embedding, through the Redis cache."""
    model = encoder.model_name
    have = store.cached_embeddings(model, texts)
    missing = [t for t in texts if t not in have]
    if missing:
        fresh = dict(zip(missing, encoder.embed_texts(missing), strict=True))
        store.cache_embeddings(model, fresh)
        have.update(fresh)
    return model, have


def apply_policies(policies: PolicySet, encoder: Encoder, store: RedisPolicyStore,
                   author: str = "", message: str = "") -> int:
    """Embed every prompt (through the cache) and store the set as a new current version."""
    model, embeddings = embed_prompts(policies.texts(), encoder, store)
    return store.save(policies, model, embeddings, author, message)
