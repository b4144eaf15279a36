"""The recent-uploads window: encoding, appends, repeats and trimming."""

from __future__ import annotations

import numpy as np

from moderation.core.recent import RecentEntry, RecentWindow


def entry(uid: str, t: float, dim: int = 4, seed: int = 0) -> RecentEntry:
    emb = np.random.default_rng(seed).normal(size=dim).astype(np.float16)
    return RecentEntry(uid, t, "allow", 3, "m@1", {"weapons": 0.25}, (), emb)


def test_an_entry_survives_its_stream_fields() -> None:
    e = entry("u-1", 1700000000.123, seed=1)
    back = RecentEntry.from_fields({k.encode(): v for k, v in e.to_fields().items()})
    assert back.upload_id == "u-1" and back.decided_at == 1700000000.123
    assert back.scores == {"weapons": 0.25} and back.policy_version == 3
    np.testing.assert_array_equal(back.embedding, e.embedding)


def test_the_window_appends_replaces_repeats_and_trims() -> None:
    w = RecentWindow()
    w.extend([(f"{i}-0", entry(f"u{i}", 100 + i, seed=i)) for i in range(3000)])
    assert len(w) == 3000 and w.embeddings.shape == (3000, 4)
    np.testing.assert_array_equal(w.embeddings[2999], entry("u2999", 0, seed=2999).embedding)
    w.extend([("5000-0", entry("u5", 5000, seed=77))])  # u5 decided again
    assert len(w) == 3000 and w.row("u5") == 2999 and w.entries[-1].decided_at == 5000
    np.testing.assert_array_equal(w.embeddings[w.row("u5") or 0],
                                  entry("u5", 0, seed=77).embedding)
    assert w.row("u6") == 5  # rows after the old u5 moved up by one
    w.drop_before("1000-0", min_decided_at=0)
    assert len(w) == 2001 and w.entries[0].upload_id == "u1000"
    w.drop_before(None, min_decided_at=2500)
    assert [e.upload_id for e in w.entries] == [f"u{i}" for i in range(2400, 3000)] + ["u5"]
    np.testing.assert_array_equal(w.embeddings[0], entry("u2400", 0, seed=2400).embedding)
