"""The recent-uploads index against a real redis-server: written per batch, bounded by
count and age, thumbnails under the same entry id."""

from __future__ import annotations

import time

import numpy as np

from moderation.core.recent import RecentEntry
from moderation.edges.recent_index import RedisRecentIndex


def entry(uid: str, t: float) -> RecentEntry:
    return RecentEntry(uid, t, "flag", 2, "m@1", {"weapons": 0.5}, ("weapons",),
                       np.arange(8, dtype=np.float16))


def test_writes_reads_and_finds_thumbnails(redis_url: str) -> None:
    index = RedisRecentIndex(redis_url, prefix=f"t{time.monotonic_ns()}")
    now = time.time()
    index.add([(entry("a", now), b"thumb-a"), (entry("b", now), None)])
    index.add([(entry("c", now), b"thumb-c")])
    got = index.read_after(None)
    assert [e.upload_id for _, e in got] == ["a", "b", "c"]
    assert got[0][1].flagged == ("weapons",)
    np.testing.assert_array_equal(got[2][1].embedding, np.arange(8, dtype=np.float16))
    assert [e.upload_id for _, e in index.read_after(got[0][0])] == ["b", "c"]
    assert index.thumbnail(got[0][0]) == b"thumb-a"
    assert index.thumbnail(got[1][0]) is None
    assert index.thumbnail(got[2][0]) == b"thumb-c"
    assert index.oldest_id() == got[0][0]


def test_stays_bounded_by_count_and_age(redis_url: str) -> None:
    index = RedisRecentIndex(redis_url, prefix=f"t{time.monotonic_ns()}", max_count=200)
    now = time.time()
    for batch in range(20):
        index.add([(entry(f"u{batch}-{i}", now), b"t") for i in range(50)])
    # MAXLEN ~ trims whole stream nodes (100 entries each): between 200 and 300 stay
    assert 200 <= index.client.xlen(index.stream) < 300
    assert 200 <= index.client.xlen(index.thumbs) < 300



def test_a_write_drops_entries_past_the_age_limit(redis_url: str) -> None:
    index = RedisRecentIndex(redis_url, prefix=f"t{time.monotonic_ns()}", max_age_s=3600)
    day_ago = int((time.time() - 86_400) * 1000)
    for i, key in enumerate((index.stream, index.thumbs)):  # as if written a day ago
        index.client.xadd(key, {"meta": b"{}", "emb": b""}, id=f"{day_ago}-{i}")
    index.add([(entry("fresh", time.time()), b"t")])
    assert [e.upload_id for _, e in index.read_after(None)] == ["fresh"]
    assert index.client.xlen(index.thumbs) == 1
