"""In-memory stand-ins for the worker's edges (pure-logic tests only; integration tests
use the real broker, Redis and Triton)."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from moderation.contract.errors import EncoderUnavailable
from moderation.core.policy import Policy, PolicySet
from moderation.edges.encoders import RejectedImage
from moderation.edges.policy_store import StoredPolicySet, StoreError

DIM = 8


def unit(i: int) -> np.ndarray:
    v = np.zeros(DIM, np.float32)
    v[i] = 1.0
    return v


def png(color: tuple[int, int, int], size: int = 8) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, "PNG")
    return buf.getvalue()


RED, BLUE = png((255, 0, 0)), png((0, 0, 255))
# a PNG whose header is fine but whose pixel data is cut off: passes the worker's cheap
# pre-check, so only the encoder can reject it
TRUNCATED = png((0, 255, 0), 64)[:60]


def policy_set(threshold: float = 0.5, extra: Sequence[Policy] = ()) -> PolicySet:
    return PolicySet(policies=(Policy(name="red_things", threshold=threshold,
                                      prompts=("red",)), *extra))


EMBEDDINGS = {"red": unit(0), "blue": unit(1), "green": unit(2)}


class FakeEncoder:
    """RED embeds as unit(0), BLUE as unit(1); ``TRUNCATED`` is rejected; the first
    ``unavailable`` calls fail as if Triton were down."""

    model_name = "fake@1"

    def __init__(self, unavailable: int = 0) -> None:
        self.unavailable = unavailable
        self.calls: list[int] = []
        self.called = threading.Event()

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        self.calls.append(len(images))
        self.called.set()
        if self.unavailable > 0:
            self.unavailable -= 1
            raise EncoderUnavailable("Triton at fake: connection refused")
        if any(img == TRUNCATED for img in images):
            raise RejectedImage("corrupt_image", "corrupt_image: truncated")
        return np.stack([unit(0) if img == RED else unit(1) for img in images])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([EMBEDDINGS[t] for t in texts])

    def ready(self) -> bool:
        return True


class FakeSource:
    """A policy store in memory; ``down`` makes every call fail like Redis going away."""

    def __init__(self) -> None:
        self.sets: dict[int, StoredPolicySet] = {}
        self.current: int | None = None
        self.down = False
        self.changed = threading.Event()
        self.failed = threading.Event()  # set when a call met the outage

    def publish(self, policies: PolicySet, model: str = "fake@1") -> int:
        version = max(self.sets, default=0) + 1
        emb = {t: EMBEDDINGS[t] for t in policies.texts()}
        self.sets[version] = StoredPolicySet(version, model, policies, emb)
        self.current = version
        self.changed.set()
        return version

    def _check(self) -> None:
        if self.down:
            self.failed.set()
            raise StoreError("Redis at fake: connection refused")

    def current_version(self) -> int | None:
        self._check()
        return self.current

    def load(self, version: int | None = None) -> StoredPolicySet:
        self._check()
        return self.sets[version if version is not None else self.current or 0]

    def notifications(self, timeout_s: float = 1.0) -> Iterator[int | None]:
        while True:
            self._check()
            fired = self.changed.wait(timeout_s)
            self.changed.clear()
            yield self.current if fired else None


@dataclass(frozen=True)
class TP:
    topic: str
    partition: int


@dataclass(frozen=True)
class FakeRecord:
    topic: str
    partition: int
    offset: int
    value: bytes | None
    key: bytes | None = None
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    timestamp: int = -1


class FakeConsumer:
    """Serves scripted records per partition; records every commit."""

    def __init__(self, records: Sequence[FakeRecord], on_commit: Callable[[dict[Any, int]], None]
                 | None = None, revoke: tuple[Callable[[], bool], TP] | None = None) -> None:
        self.revoke = revoke  # (when, partition): a rebalance once when() holds
        # a partition revoked while poll() is already returning records fetched for it
        self.revoke_while_returning: TP | None = None
        self.polls = 0
        self.revoked: set[TP] = set()
        # a rebalance that gives a partition straight back to this member while poll() is
        # draining, from the old fetch position: (partition, next offset, stale offset)
        self.reassign_while_returning: tuple[TP, int, int] | None = None
        self.log: dict[TP, list[FakeRecord]] = {}
        for r in records:
            self.log.setdefault(TP(r.topic, r.partition), []).append(r)
        self.queues = {tp: list(rs) for tp, rs in self.log.items()}  # what is left to serve
        self.commits: list[dict[TP, int]] = []
        self.on_commit = on_commit
        self._paused: set[TP] = set()
        self.closed = False
        self.pause_calls = 0
        self.quiet = threading.Event()  # never set: a bounded wait standing in for poll's

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self.listener = listener
        listener.on_partitions_assigned(set(self.queues))

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TP, list[Any]]:
        self.polls += 1
        if self.revoke and self.revoke[0]():
            tp = self.revoke[1]  # a rebalance: the listener runs inside poll
            self.revoke = None
            self.listener.on_partitions_revoked({tp})
            self.queues.pop(tp, None)
            self.revoked.add(tp)
        out = {}
        jump = self.reassign_while_returning
        for tp, queue in self.queues.items():
            if jump and jump[0] == tp and queue and queue[0].offset == jump[1]:
                self.reassign_while_returning = None
                self.listener.on_partitions_revoked({tp})  # the IO thread, mid-poll
                self.listener.on_partitions_assigned({tp})
                queue = [r for r in self.log[tp] if r.offset >= jump[2]]
            if tp not in self._paused and queue:
                out[tp], self.queues[tp] = queue[:4], queue[4:]
        late = self.revoke_while_returning
        if late is not None and late in out:
            self.revoke_while_returning = None
            self.listener.on_partitions_revoked({late})  # the IO thread, mid-poll
            self.queues.pop(late, None)
            self.revoked.add(late)
        if not out:
            self.quiet.wait(timeout_ms / 1000)
        return out

    def commit(self, offsets: dict[TP, Any]) -> None:
        plain = {tp: om.offset for tp, om in offsets.items()}
        if self.on_commit:
            self.on_commit(plain)
        self.commits.append(plain)

    def commit_async(self, offsets: dict[TP, Any]) -> None:
        self.async_commits = {tp: om.offset for tp, om in offsets.items()}
        self.commit(offsets)

    def committed(self, tp: TP, timeout_ms: int | None = None) -> int | None:
        return self.last_committed().get(tp)

    def seek(self, tp: TP, offset: int) -> None:
        if tp not in self.queues:
            raise RuntimeError(f"{tp} is not assigned")
        self.queues[tp] = [r for r in self.log[tp] if r.offset >= offset]

    def seek_to_beginning(self, *tps: TP) -> None:
        for tp in tps:
            self.seek(tp, -1)

    def assignment(self) -> set[TP]:
        return set(self.queues)

    def pause(self, *tps: TP) -> None:
        self.pause_calls += 1
        self._paused.update(tps)

    def resume(self, *tps: TP) -> None:
        self._paused.difference_update(tps)

    def paused(self) -> set[TP]:
        return set(self._paused)

    def highwater(self, tp: TP) -> int | None:
        return None

    def position(self, tp: TP, timeout_ms: int | None = None) -> int | None:
        return None

    def close(self, autocommit: bool = True) -> None:
        self.closed = True

    def last_committed(self) -> dict[TP, int]:
        out: dict[TP, int] = {}
        for c in self.commits:
            out.update(c)
        return out


class FakePublisher:
    """Acknowledges every send at once, except the first ``fail`` ones."""

    def __init__(self, fail: int = 0) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.fail = fail
        self.lock = threading.Lock()

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: Sequence[tuple[str, bytes]], done: Callable[[Exception | None], None]
                ) -> None:
        with self.lock:
            failing = self.fail > 0
            if failing:
                self.fail -= 1
            else:
                self.sent.append((topic, key, value, list(headers)))
        done(RuntimeError("broker said no") if failing else None)

    def on(self, topic: str) -> list[tuple[str, bytes | None, bytes | None,
                                          list[tuple[str, bytes]]]]:
        with self.lock:
            return [s for s in self.sent if s[0] == topic]

    def flush(self, timeout_s: float) -> None:
        pass

    def close(self, timeout_s: float = 10.0) -> None:
        pass



class FakeLedger:
    def __init__(self, decided: set[str] | None = None, down: bool = False) -> None:
        self.keys = set(decided or ())
        self.down = down

    def decided(self, keys: Sequence[str]) -> set[str]:
        if self.down:
            raise StoreError("decision ledger: connection refused")
        return self.keys & set(keys)

    def record(self, keys: Sequence[str]) -> None:
        if self.down:
            raise StoreError("decision ledger: connection refused")
        self.keys.update(keys)


class FakeAttempts:
    """The attempt counter in memory; ``prior`` seeds counts left by earlier processes."""

    def __init__(self, prior: dict[tuple[str, int, int], int] | None = None,
                 down: bool = False) -> None:
        self.n: dict[tuple[str, int, int], int] = dict(prior or {})
        self.down = down
        self.forgotten: list[tuple[str, int, int]] = []

    def _check(self) -> None:
        if self.down:
            raise StoreError("attempt counter: connection refused")

    def counts(self, records: Sequence[tuple[str, int, int]]) -> list[int]:
        self._check()
        return [self.n.get(c, 0) for c in records]

    def start(self, records: Sequence[tuple[str, int, int]]) -> list[int]:
        self._check()
        for c in records:
            self.n[c] = self.n.get(c, 0) + 1
        return [self.n[c] for c in records]

    def forget(self, records: Sequence[tuple[str, int, int]]) -> None:
        self._check()
        for c in records:
            self.n.pop(c, None)
            self.forgotten.append(c)
