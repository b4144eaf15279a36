"""The recent-uploads index in Redis: what every decided upload leaves for the policy console.

Keys (prefix configurable):
    {p}:recent          stream, one entry per decided upload: meta (JSON: id, time,
                        decision, version, model, flagged, per-policy scores) and emb
                        (float16 image embedding)
    {p}:recent:thumbs   stream, the upload's thumbnail (WebP) under the same entry id,
                        when thumbnails are on

Both streams are trimmed on every write, by count (MAXLEN) and age (MINID), so the index is
bounded whatever the traffic (the count approximately: whole stream nodes of 100 entries;
the age exactly); one Lua call per batch writes and trims both. Writes are
best-effort: the worker counts a failure and goes on (the index is for people, decisions
never wait on it).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Protocol

from moderation.config import RecentSettings, RedisSettings
from moderation.core.recent import RecentEntry
from moderation.edges.side_store import PausingRedis

# KEYS: stream, thumbs; ARGV: max_count, min_id, then per entry: meta, emb, thumb ('' = none)
_ADD = """
local ids = {}
for i = 3, #ARGV, 3 do
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                        'meta', ARGV[i], 'emb', ARGV[i + 1])
  if ARGV[i + 2] ~= '' then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], id, 'thumb', ARGV[i + 2])
  end
  ids[#ids + 1] = id
end
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[2])
redis.call('XTRIM', KEYS[2], 'MINID', ARGV[2])
return ids
"""


class RecentSink(Protocol):
    def add(self, entries: Sequence[tuple[RecentEntry, bytes | None]],
            now: float | None = None) -> None:
        """Record decided uploads (with thumbnails where made); raises StoreError."""


class RedisRecentIndex(PausingRedis):
    def __init__(self, url: str, prefix: str = "moderation", max_count: int = 100_000,
                 max_age_s: float = 7 * 86_400, password: str | None = None,
                 timeout_s: float = 0.5) -> None:
        super().__init__(url, "recent index", password, timeout_s)
        self.stream = f"{prefix}:recent"
        self.thumbs = f"{prefix}:recent:thumbs"
        self.max_count = max_count
        self.max_age_s = max_age_s
        self._script: Any = None

    @classmethod
    def from_settings(cls, redis: RedisSettings, recent: RecentSettings,
                      timeout_s: float = 0.5) -> RedisRecentIndex:
        password = redis.password.get_secret_value() if redis.password else None
        return cls(redis.url, redis.key_prefix, recent.max_count, recent.max_age_s, password,
                   timeout_s)

    def min_id(self, now: float | None = None) -> str:
        return f"{int(((now or time.time()) - self.max_age_s) * 1000)}-0"

    def add(self, entries: Sequence[tuple[RecentEntry, bytes | None]],
            now: float | None = None) -> None:
        if not entries:
            return
        args: list[Any] = [self.max_count, self.min_id(now)]
        for entry, thumb in entries:
            fields = entry.to_fields()
            args += [fields["meta"], fields["emb"], thumb or b""]

        def write(client: Any) -> None:
            if self._script is None:
                self._script = client.register_script(_ADD)
            self._script(keys=[self.stream, self.thumbs], args=args)
        self.call("record recent uploads", write)

    # --- the console's side ------------------------------------------------------------

    def read_after(self, stream_id: str | None, count: int = 2_000
                   ) -> list[tuple[str, RecentEntry]]:
        """Up to ``count`` entries after ``stream_id`` (None: from the oldest)."""
        start = f"({stream_id}" if stream_id else "-"
        raw = self.call("read recent uploads",
                        lambda c: c.xrange(self.stream, start, "+", count))
        return [(sid.decode(), RecentEntry.from_fields(fields)) for sid, fields in raw]

    def oldest_id(self) -> str | None:
        raw = self.call("read recent uploads", lambda c: c.xrange(self.stream, "-", "+", 1))
        return raw[0][0].decode() if raw else None

    def thumbnail(self, stream_id: str) -> bytes | None:
        raw = self.call("read a thumbnail",
                        lambda c: c.xrange(self.thumbs, stream_id, stream_id, 1))
        return bytes(raw[0][1][b"thumb"]) if raw else None
