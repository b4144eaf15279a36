"""The Redis policy store against a real redis-server (the encoder is a counting fake)."""

import hashlib
import re
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from moderation.core.policy import Policy, PolicySet
from moderation.edges.policy_files import load_policy_dir
from moderation.edges.policy_store import RedisPolicyStore, StoreError, apply_policies
from tests.pipeline_helpers import demo_model_name

REPO = Path(__file__).resolve().parents[2]


class CountingEncoder:
    """Deterministic pseudo-embeddings; counts the texts it was asked to embed."""

    model_name = "fake@1"

    def __init__(self) -> None:
        self.embedded: list[str] = []

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        self.embedded += list(texts)
        out = []
        for t in texts:
            seed = int(hashlib.sha256(t.encode()).hexdigest()[:8], 16)
            v = np.random.default_rng(seed).normal(size=8).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        raise NotImplementedError


@pytest.fixture()
def store(redis_url: str, request: pytest.FixtureRequest) -> RedisPolicyStore:
    return RedisPolicyStore(redis_url, prefix=f"test-{request.node.name}")


def test_apply_versions_and_round_trip(store: RedisPolicyStore) -> None:
    policies = load_policy_dir(REPO / "policies")
    enc = CountingEncoder()
    assert store.current_version() is None
    with pytest.raises(StoreError, match="no policy set has been applied"):
        store.load()
    v1 = apply_policies(policies, enc, store)
    assert v1 == 1 and store.current_version() == 1
    loaded = store.load()
    assert loaded.version == 1 and loaded.model == "fake@1"
    assert loaded.policies == policies
    expected = enc.embed_texts(policies.texts())
    np.testing.assert_array_equal(np.stack([loaded.embeddings[t] for t in policies.texts()]),
                                  expected)
    assert loaded.matrix().names == policies.names


def test_prompt_embeddings_are_cached_by_model_and_text(store: RedisPolicyStore) -> None:
    enc = CountingEncoder()
    a = PolicySet(policies=(Policy(name="a", threshold=0.3, prompts=("x", "y")),))
    b = PolicySet(policies=(Policy(name="a", threshold=0.4, prompts=("x", "z")),))
    assert apply_policies(a, enc, store) == 1
    assert apply_policies(b, enc, store) == 2
    assert enc.embedded == ["x", "y", "z"]  # "x" came from the cache the second time
    assert store.load(1).policies == a and store.load().policies == b  # old versions kept


def test_workers_are_notified_of_new_versions(store: RedisPolicyStore) -> None:
    seen: list[int] = []
    subscribed = threading.Event()

    def listen() -> None:
        for version in store.notifications(timeout_s=0.2):
            subscribed.set()
            if version is not None:
                seen.append(version)
                return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert subscribed.wait(10)  # the first quiet timeout means the subscription is live
    policies = PolicySet(policies=(Policy(name="a", threshold=0.3, prompts=("x",)),))
    version = apply_policies(policies, CountingEncoder(), store)
    t.join(10)
    assert seen == [version]


def test_redis_down_is_a_clear_error() -> None:
    from moderation.devtools.processes import free_port

    store = RedisPolicyStore(f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.5)
    policies = PolicySet(policies=(Policy(name="a", threshold=0.3, prompts=("x",)),))
    with pytest.raises(StoreError, match=r"Redis at redis://127\.0\.0\.1:\d+/0: cannot"):
        apply_policies(policies, CountingEncoder(), store)


def test_policies_cli(redis_url: str, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from moderation.cli.main import main

    monkeypatch.setenv("MODERATION_REDIS__URL", redis_url)
    assert main(["policies", "validate", str(REPO / "policies")]) == 0
    assert "ok: 7 policies" in capsys.readouterr().out
    assert main(["policies", "apply", str(REPO / "policies"), "--local"]) == 0
    out = capsys.readouterr().out
    assert "applied 7 policies as version" in out
    assert main(["policies", "list"]) == 0
    listing = capsys.readouterr().out
    assert f"model {demo_model_name()}" in listing and "weapons" in listing
    (tmp_path / "bad.yaml").write_text("name: x\nthreshold: 2\nprompts: [a]\n")
    assert main(["policies", "validate", str(tmp_path)]) == 2
    assert "bad.yaml: policy 'x': field 'threshold'" in capsys.readouterr().err


def test_every_apply_and_rollback_is_in_the_history(store: RedisPolicyStore) -> None:
    enc = CountingEncoder()
    a = PolicySet(policies=(Policy(name="a", threshold=0.3, prompts=("x",)),))
    b = PolicySet(policies=(Policy(name="a", threshold=0.5, prompts=("x",)),
                            Policy(name="b", threshold=0.4, prompts=("y",))))
    v1 = apply_policies(a, enc, store, author="ana", message="first rules")
    v2 = apply_policies(b, enc, store, author="bo", message="stricter a, new b")
    embedded = list(enc.embedded)
    v3 = store.rollback(v1, author="cy")
    assert (v1, v2, v3) == (1, 2, 3) and store.current_version() == 3
    restored = store.load()
    assert restored.policies == a and restored.model == "fake@1"
    np.testing.assert_array_equal(restored.embeddings["x"], store.load(v1).embeddings["x"])
    assert enc.embedded == embedded  # a rollback embeds nothing again
    history = store.history()
    assert [(e.version, e.author, e.message, e.policies, e.rollback_of) for e in history] == [
        (1, "ana", "first rules", ("a",), None),
        (2, "bo", "stricter a, new b", ("a", "b"), None),
        (3, "cy", "rollback to version 1", ("a",), 1)]
    assert all(e.applied_at.endswith("+00:00") for e in history)
    with pytest.raises(StoreError, match="version 9 is missing"):
        store.rollback(9)


def test_a_rollback_reaches_a_following_worker_within_two_seconds(
        store: RedisPolicyStore) -> None:
    import time

    from moderation.edges.live_policies import LivePolicies

    enc = CountingEncoder()
    a = PolicySet(policies=(Policy(name="a", threshold=0.3, prompts=("x",)),))
    b = PolicySet(policies=(Policy(name="b", threshold=0.3, prompts=("y",)),))
    apply_policies(a, enc, store)
    apply_policies(b, enc, store)
    live = LivePolicies(store, lambda: "fake@1")
    stop = threading.Event()
    follower = threading.Thread(target=live.follow, args=(stop,), daemon=True)
    follower.start()
    try:
        assert live.wait_version(2, 10)
        rolled_at = time.monotonic()
        version = store.rollback(1, author="cy")
        assert live.wait_version(version, 2.0)
        assert time.monotonic() - rolled_at < 2.0
        active = live.active
        assert active is not None and active.matrix.names == ("a",)
    finally:
        stop.set()
        follower.join(5)


def test_policies_history_diff_and_rollback_cli(
        redis_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        tmp_path: Path) -> None:
    import json

    from moderation.cli.main import main

    monkeypatch.setenv("MODERATION_REDIS__URL", redis_url)
    monkeypatch.setenv("MODERATION_REDIS__KEY_PREFIX", "test-history-cli")
    assert main(["policies", "apply", str(REPO / "policies"), "--local", "--author", "ana",
                 "-m", "defaults"]) == 0
    draft = tmp_path / "draft"
    draft.mkdir()
    for f in (REPO / "policies").glob("*.yaml"):
        text = f.read_text()
        if f.name == "weapons.yaml":
            text = re.sub(r"(?m)^threshold: [0-9.]+", "threshold: 0.9", text)
        if f.name != "gambling.yaml":
            (draft / f.name).write_text(text)
    capsys.readouterr()
    assert main(["policies", "diff", str(draft)]) == 0
    diff = capsys.readouterr().out
    assert "- gambling (removed)" in diff and "~ weapons (changed)" in diff
    assert re.search(r"\n    threshold 0\.\d{3} -> 0\.900\n", diff)
    assert main(["policies", "apply", str(draft), "--local", "--author", "bo",
                 "-m", "no gambling"]) == 0
    assert main(["policies", "rollback", "1", "--author", "cy"]) == 0
    assert "version 1 is current again, as version 3" in capsys.readouterr().out
    assert main(["policies", "history"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[2].startswith("* v3") and "(rollback to 1)" in lines[2]
    assert "bo" in lines[1] and "no gambling" in lines[1]
    assert main(["policies", "history", "--json"]) == 0
    entries = json.loads(capsys.readouterr().out)
    assert [e["author"] for e in entries] == ["ana", "bo", "cy"]
    assert len(entries[1]["policies"]) == 6
    assert main(["policies", "rollback", "latest"]) == 2
    assert "VERSION is a number" in capsys.readouterr().err
