"""A console over real Redis and Triton (demo bundle), with the samples in its recent index."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from moderation.config import ConsoleSettings, ConsoleToken, RedisSettings, Settings
from moderation.console.service import Console
from moderation.contract.events import Upload
from moderation.core.batching import decide
from moderation.core.images import thumbnail
from moderation.core.recent import RecentEntry
from moderation.edges.encoders import TritonEncoder
from moderation.edges.policy_files import load_policy_dir
from moderation.edges.policy_store import RedisPolicyStore, apply_policies
from moderation.edges.recent_index import RedisRecentIndex

ROOT = Path(__file__).resolve().parents[2]
TOKENS = {"vera": ("viewer", "viewer-token-1"), "ed": ("editor", "editor-token-1")}


@dataclass
class Scene:
    settings: Settings
    console: Console
    samples: dict[str, np.ndarray]  # upload id -> image embedding as stored (float16)


def console_settings(redis_url: str, prefix: str, triton: str, **console: object) -> Settings:
    tokens = [ConsoleToken.model_validate({"name": n, "role": r, "token": t})
              for n, (r, t) in TOKENS.items()]
    return Settings.model_validate({
        "redis": RedisSettings(url=redis_url, key_prefix=prefix),
        "triton": {"url": triton},
        "console": ConsoleSettings.model_validate({"tokens": tokens, "refresh_s": 0,
                                                   **console})})


@pytest.fixture(scope="module")
def scene(redis_url: str, triton_demo: str) -> Iterator[Scene]:
    prefix = f"console-{uuid.uuid4().hex[:6]}"
    settings = console_settings(redis_url, prefix, triton_demo, max_request_bytes=65_536)
    encoder = TritonEncoder.from_settings(settings.triton)
    store = RedisPolicyStore(redis_url, prefix)
    apply_policies(load_policy_dir(ROOT / "policies"), encoder, store, "setup", "first")
    current = store.load()
    paths = sorted((ROOT / "samples").glob("*.*"))
    images = [p.read_bytes() for p in paths]
    emb = encoder.embed_images(images)
    now = datetime.now(UTC)
    uploads = [(Upload(upload_id=p.stem, image=b"", image_url=None, created_at=None), now)
               for p in paths]
    decisions = decide(uploads, emb, current.matrix(), current.version, current.model)
    index = RedisRecentIndex.from_settings(settings.redis, settings.recent)
    index.add([(RecentEntry.of(d, e), thumbnail(img, 96))
               for d, e, img in zip(decisions, emb, images, strict=True)])
    console = Console.from_settings(settings, encoder)
    yield Scene(settings, console, {p.stem: e.astype(np.float16) for p, e in zip(paths, emb,
                                                                              strict=True)})
    encoder.close()
