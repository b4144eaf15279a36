"""The worker loop against in-memory edges: outcomes, commits, outages, shutdown.

The same loop runs against the real broker, Redis and Triton in test_worker_e2e.py.
"""

from __future__ import annotations

import base64
import json
import threading
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from moderation.config import KafkaSettings, Settings, TritonSettings, WorkerSettings
from moderation.edges.live_policies import LivePolicies
from moderation.edges.metrics import Metrics
from moderation.worker.loop import Worker
from tests.fakes import (
    BLUE,
    RED,
    TP,
    TRUNCATED,
    FakeAttempts,
    FakeConsumer,
    FakeEncoder,
    FakeLedger,
    FakePublisher,
    FakeRecord,
    FakeSource,
    policy_set,
)

DECISIONS, DLQ = "moderation.decisions", "moderation.dlq"


def event(upload_id: str, image: bytes) -> bytes:
    return json.dumps({"upload_id": upload_id,
                       "image_b64": base64.b64encode(image).decode()}).encode()


def records(values: list[bytes | None], partition: int = 0,
            headers: dict[int, list[tuple[str, bytes]]] | None = None) -> list[FakeRecord]:
    return [FakeRecord("uploads", partition, offset, v, headers=(headers or {}).get(offset, []))
            for offset, v in enumerate(values)]


def settings(**worker: Any) -> Settings:
    w = {"batch_linger_ms": 0, "commit_interval_s": 0.01, "drain_timeout_s": 5.0,
         "retry_max_s": 0.05, **worker}
    return Settings(worker=WorkerSettings(**w), triton=TritonSettings(batch_size=4),
                    kafka=KafkaSettings())


def make_worker(consumer: FakeConsumer, encoder: FakeEncoder | None = None,
                publisher: FakePublisher | None = None, source: FakeSource | None = None,
                cfg: Settings | None = None, ledger: FakeLedger | None = None,
                attempts: FakeAttempts | None = None
                ) -> tuple[Worker, FakePublisher, Metrics]:
    if source is None:
        source = FakeSource()
        source.publish(policy_set())
    metrics = Metrics(CollectorRegistry())
    live = LivePolicies(source, lambda: "fake@1", metrics)
    live.refresh()
    publisher = publisher or FakePublisher()
    worker = Worker(cfg or settings(), consumer, publisher, encoder or FakeEncoder(), live,
                    metrics, ledger, attempts)
    return worker, publisher, metrics


def dead_letters(pub: FakePublisher) -> dict[str, str]:
    """source offset -> error-type of every dead letter."""
    out = {}
    for _, _, _, headers in pub.on(DLQ):
        h = dict(headers)
        out[h["source-offset"].decode()] = h["error-type"].decode()
    return out


def test_every_message_gets_one_decision_or_dead_letter_and_all_offsets_commit() -> None:
    values: list[bytes | None] = [
        event("red-1", RED), event("blue-1", BLUE), RED, b"{not json", b"",
        event("cut-1", TRUNCATED), json.dumps({"upload_id": "url-1",
                                               "image_url": "http://example.com/a.png"}).encode(),
        b"hello, not an image", event("red-2", RED), json.dumps({"image_b64": ""}).encode(),
    ]
    headers = {2: [("upload-id", b"raw-red")], 7: [("upload-id", b"text-1")]}
    consumer = FakeConsumer(records(values, 0, headers) + records([event("p1", BLUE)], 1))
    worker, pub, metrics = make_worker(consumer)
    worker.run(idle_exit_s=0.3)

    decisions = {json.loads(v or b"")["upload_id"]: json.loads(v or b"")
                 for _, _, v, _ in pub.on(DECISIONS)}
    assert set(decisions) == {"red-1", "blue-1", "raw-red", "red-2", "p1"}
    assert decisions["red-1"]["decision"] == "flag"
    assert decisions["red-1"]["flagged_policies"] == ["red_things"]
    assert decisions["blue-1"]["decision"] == "allow"
    assert {d["policy_version"] for d in decisions.values()} == {1}
    assert dead_letters(pub) == {"3": "invalid_json", "4": "empty_message",
                                 "5": "corrupt_image", "6": "url_not_allowed",
                                 "7": "undecodable_image", "9": "missing_field"}
    # a dead letter carries the original value and headers, and where it came from
    _, _, value, hdrs = next(s for s in pub.on(DLQ) if dict(s[3])["source-offset"] == b"7")
    assert value == b"hello, not an image" and ("upload-id", b"text-1") in hdrs
    assert dict(hdrs)["source-topic"] == b"uploads" and dict(hdrs)["source-partition"] == b"0"
    assert len(pub.sent) == 11  # exactly one outcome per message
    assert consumer.last_committed() == {TP("uploads", 0): 10, TP("uploads", 1): 1}
    assert consumer.closed
    assert metrics.messages.labels("decided")._value.get() == 5
    assert metrics.dead_letters.labels("corrupt_image")._value.get() == 1


def test_one_rejected_image_is_isolated_by_bisection() -> None:
    values = [event(f"u{i}", RED) for i in range(3)] + [event("bad", TRUNCATED)]
    encoder = FakeEncoder()
    consumer = FakeConsumer(records(values))
    worker, pub, _ = make_worker(consumer, encoder)
    worker.run(idle_exit_s=0.3)
    assert len(pub.on(DECISIONS)) == 3 and dead_letters(pub) == {"3": "corrupt_image"}
    assert encoder.calls == [4, 2, 2, 1, 1]  # the whole batch, halves, then the bad half
    assert consumer.last_committed() == {TP("uploads", 0): 4}


def test_triton_outage_waits_and_never_commits_or_dead_letters_undecided_uploads() -> None:
    published: set[str] = set()

    class Tracking(FakePublisher):
        def publish(self, topic, key, value, headers, done):  # type: ignore[no-untyped-def]
            published.add((key or b"").decode())
            super().publish(topic, key, value, headers, done)

    def on_commit(offsets: dict[Any, int]) -> None:
        for tp, offset in offsets.items():  # everything below a commit has its outcome
            assert all(f"u-{tp.partition}-{o}" in published for o in range(offset))

    values = [event(f"u-0-{i}", RED if i % 2 else BLUE) for i in range(10)]
    encoder = FakeEncoder(unavailable=5)
    consumer = FakeConsumer(records(values), on_commit=on_commit)
    worker, pub, metrics = make_worker(consumer, encoder, Tracking())
    worker.run(idle_exit_s=0.3)
    assert len(pub.on(DECISIONS)) == 10 and pub.on(DLQ) == []
    assert metrics.triton_errors.labels("unavailable")._value.get() == 5
    assert consumer.last_committed() == {TP("uploads", 0): 10}


def test_failed_sends_are_retried_before_anything_commits() -> None:
    consumer = FakeConsumer(records([event(f"u{i}", RED) for i in range(6)]))
    worker, pub, metrics = make_worker(consumer, publisher=FakePublisher(fail=3))
    worker.run(idle_exit_s=0.5)
    assert sorted(json.loads(v or b"")["upload_id"] for _, _, v, _ in pub.on(DECISIONS)) == \
        [f"u{i}" for i in range(6)]
    assert metrics.publish_errors._value.get() == 3
    assert consumer.last_committed() == {TP("uploads", 0): 6}


def test_backpressure_pauses_until_policies_arrive() -> None:
    source = FakeSource()  # no policy set applied yet: nothing can be decided
    consumer = FakeConsumer(records([event(f"u{i}", RED) for i in range(12)]))
    paused = threading.Event()
    original_pause = consumer.pause

    def pause(*tps: TP) -> None:
        original_pause(*tps)
        paused.set()

    consumer.pause = pause  # type: ignore[method-assign]
    worker, pub, _ = make_worker(consumer, source=source, cfg=settings(max_in_flight=4))
    assert worker.readiness()["policies"] is False

    def apply_when_paused() -> None:
        assert paused.wait(10)
        source.publish(policy_set())
        worker.policies.refresh()

    helper = threading.Thread(target=apply_when_paused)
    helper.start()
    worker.run(idle_exit_s=0.5)
    helper.join()
    assert len(pub.on(DECISIONS)) == 12
    assert consumer.last_committed() == {TP("uploads", 0): 12}


def test_stop_during_outage_abandons_in_flight_work_uncommitted() -> None:
    encoder = FakeEncoder(unavailable=10**9)  # Triton never comes back
    consumer = FakeConsumer(records([event(f"u{i}", RED) for i in range(3)]))
    worker, pub, _ = make_worker(consumer, encoder, cfg=settings(drain_timeout_s=0.2))
    stopper = threading.Thread(target=lambda: (encoder.called.wait(10), worker.stop()))
    stopper.start()
    worker.run()
    stopper.join()
    assert pub.sent == [] and consumer.commits == [] and consumer.closed
    assert worker.readiness()["triton"] is False


def test_revocation_commits_what_is_acknowledged_and_drops_the_rest() -> None:
    pub = FakePublisher()
    p1 = [event(f"p1-{i}", RED) for i in range(8)]

    def p1_decided() -> bool:
        return any((key or b"").startswith(b"p1-") for _, key, _, _ in pub.on(DECISIONS))

    consumer = FakeConsumer(records([event(f"p0-{i}", RED) for i in range(8)], 0)
                            + records(p1, 1), revoke=(p1_decided, TP("uploads", 1)))
    # no periodic commits: only the revocation and the shutdown commit
    worker, _, _ = make_worker(consumer, publisher=pub, cfg=settings(commit_interval_s=1000))
    worker.run(idle_exit_s=0.3)
    assert TP("uploads", 1) in consumer.revoked
    revoked_at = consumer.async_commits[TP("uploads", 1)]
    assert revoked_at >= 1  # the acknowledged prefix at that moment
    assert consumer.last_committed() == {TP("uploads", 0): 8, TP("uploads", 1): revoked_at}


@pytest.mark.parametrize("poison", [b"\x00" * 10, b"GIF89a" + b"\x00" * 10])
def test_unusual_bytes_never_stop_the_worker(poison: bytes) -> None:
    consumer = FakeConsumer(records([event("p", poison), event("ok", RED)]))
    worker, pub, _ = make_worker(consumer)
    worker.run(idle_exit_s=0.3)
    assert len(pub.on(DECISIONS)) == 1 and len(pub.on(DLQ)) == 1


def test_image_urls_are_fetched_under_the_fetch_policy() -> None:
    from moderation.config import FetchSettings
    from tests.edges.test_fetch import Server, body

    public, internal = Server("127.0.0.2"), Server("127.0.0.1")
    public.routes["/red.png"] = body(RED)
    internal.routes["/red.png"] = body(RED)
    try:
        cfg = settings().model_copy(update={"fetch": FetchSettings(
            allowed_hosts=["127.0.0.2", "127.0.0.1"], allowed_networks=["127.0.0.2/32"])})
        values = [json.dumps({"upload_id": uid, "image_url": url}).encode() for uid, url in
                  [("ok", public.url("/red.png")), ("ssrf", internal.url("/red.png")),
                   ("gone", public.url("/nothing.png"))]]
        consumer = FakeConsumer(records(values))
        worker, pub, _ = make_worker(consumer, cfg=cfg)
        worker.run(idle_exit_s=0.3)
    finally:
        public.httpd.shutdown()
        internal.httpd.shutdown()
    [(_, _, value, _)] = pub.on(DECISIONS)
    assert json.loads(value or b"")["flagged_policies"] == ["red_things"]
    assert dead_letters(pub) == {"1": "url_blocked_address", "2": "url_fetch_failed"}
    assert consumer.last_committed() == {TP("uploads", 0): 3}


def test_replayed_uploads_already_decided_are_not_published_again() -> None:
    ledger = FakeLedger({"u0@1", "u2@1", "u1@0"})  # u1 was decided under an older version
    values = [event(f"u{i}", RED) for i in range(4)]
    consumer = FakeConsumer(records(values))
    encoder = FakeEncoder()
    worker, pub, metrics = make_worker(consumer, encoder, ledger=ledger)
    worker.run(idle_exit_s=0.3)
    published = sorted(json.loads(v or b"")["upload_id"] for _, _, v, _ in pub.on(DECISIONS))
    assert published == ["u1", "u3"]
    assert encoder.calls == [2]  # skipped uploads are not even embedded
    assert metrics.messages.labels("duplicate_skipped")._value.get() == 2
    assert {"u1@1", "u3@1"} <= ledger.keys  # recorded once acknowledged
    assert consumer.last_committed() == {TP("uploads", 0): 4}


def test_ledger_down_means_deciding_again_not_losing() -> None:
    ledger = FakeLedger({"u0@1"}, down=True)
    consumer = FakeConsumer(records([event(f"u{i}", RED) for i in range(3)]))
    worker, pub, metrics = make_worker(consumer, ledger=ledger)
    worker.run(idle_exit_s=0.3)
    assert len(pub.on(DECISIONS)) == 3  # u0 is published again: a duplicate, never a loss
    assert metrics.dedupe_errors._value.get() >= 1
    assert consumer.last_committed() == {TP("uploads", 0): 3}


def test_records_handed_out_again_after_a_rewind_are_decided_not_skipped() -> None:
    """A rebalance can hand out buffered later offsets, then rewind to the committed one.
    The worker once skipped the rewound records and committed past them (lost uploads)."""
    rewound = [FakeRecord("uploads", 0, o, event(f"u{o}", RED)) for o in (5, 6, 7, 3, 4, 5)]
    consumer = FakeConsumer(rewound)
    worker, pub, _ = make_worker(consumer)
    worker.run(idle_exit_s=0.3)
    decided = {json.loads(v or b"")["upload_id"] for _, _, v, _ in pub.on(DECISIONS)}
    assert decided == {"u3", "u4", "u5", "u6", "u7"}
    assert consumer.last_committed() == {TP("uploads", 0): 8}


def test_records_of_a_partition_revoked_mid_poll_are_left_to_its_new_owner() -> None:
    """The listener runs on kafka-python's IO thread, so a poll can return records of a
    partition revoked meanwhile. Tracking them once let this member commit that partition
    past uploads its new owner had not decided (lost uploads in the chaos run)."""
    consumer = FakeConsumer(records([event(f"p0-{i}", RED) for i in range(4)], 0)
                            + records([event(f"p1-{i}", RED) for i in range(4)], 1))
    consumer.revoke_while_returning = TP("uploads", 1)
    worker, pub, _ = make_worker(consumer)
    worker.run(idle_exit_s=0.3)
    assert consumer.last_committed() == {TP("uploads", 0): 4}  # nothing for partition 1
    assert {json.loads(v or b"")["upload_id"] for _, _, v, _ in pub.on(DECISIONS)} == \
        {f"p0-{i}" for i in range(4)}


def test_a_partition_assigned_back_mid_poll_restarts_at_its_committed_offset() -> None:
    """kafka-python 3 applies an assignment on its IO thread while poll() drains: records
    from the old fetch position (here 8-11, while 4-7 were still undecided) can come out
    right after the partition is given back. Tracking them started the committed prefix
    past 4-7 (lost uploads in a CI chaos run)."""
    consumer = FakeConsumer(records([event(f"u{i}", RED) for i in range(16)]))
    consumer.reassign_while_returning = (TP("uploads", 0), 4, 8)
    worker, pub, _ = make_worker(consumer)
    worker.run(idle_exit_s=0.3)
    assert consumer.reassign_while_returning is None  # the rebalance happened
    decided = {json.loads(v or b"")["upload_id"] for _, _, v, _ in pub.on(DECISIONS)}
    assert decided == {f"u{i}" for i in range(16)}
    assert consumer.last_committed() == {TP("uploads", 0): 16}


def blue_and_red_with(name: str, action: str
                      ) -> tuple[dict[str, Any], FakePublisher, Metrics, FakeConsumer]:
    """A blue and a red upload under red_things plus a ``blue`` policy with ``action``."""
    from moderation.core.policy import Policy

    source = FakeSource()
    blue = Policy(name=name, threshold=0.5, prompts=("blue",), action=action)  # type: ignore[arg-type]
    source.publish(policy_set(extra=[blue]))
    consumer = FakeConsumer(records([event("blue-1", BLUE), event("red-1", RED)]))
    worker, pub, metrics = make_worker(consumer, source=source)
    worker.run(idle_exit_s=0.3)
    decisions = {json.loads(v or b"")["upload_id"]: json.loads(v or b"")
                 for _, _, v, _ in pub.on(DECISIONS)}
    return decisions, pub, metrics, consumer


def test_a_shadow_policy_is_reported_and_counted_but_never_flags() -> None:
    decisions, _, metrics, _ = blue_and_red_with("blue_things", "shadow")
    assert decisions["blue-1"]["decision"] == "allow"
    assert decisions["blue-1"]["flagged_policies"] == []
    assert decisions["blue-1"]["shadow_flagged_policies"] == ["blue_things"]
    shadow = decisions["blue-1"]["verdicts"][1]
    assert shadow["policy"] == "blue_things" and shadow["flagged"] and shadow[
        "action"] == "shadow"
    assert decisions["red-1"]["decision"] == "flag"
    assert decisions["red-1"]["shadow_flagged_policies"] == []
    assert metrics.shadow_flags.labels("blue_things")._value.get() == 1
    assert metrics.flags.labels("red_things")._value.get() == 1
    assert metrics.decisions.labels("allow")._value.get() == 1


def test_a_review_policy_sends_the_upload_to_the_review_topic_without_flagging() -> None:
    decisions, pub, metrics, consumer = blue_and_red_with("blue_review", "review")
    assert decisions["blue-1"]["decision"] == "allow"
    assert decisions["blue-1"]["review_policies"] == ["blue_review"]
    assert decisions["red-1"]["decision"] == "flag" and decisions["red-1"]["review_policies"] == []
    reviews = pub.on("moderation.review")
    assert [(k, json.loads(v or b"")) for _, k, v, _ in reviews] == [
        (b"blue-1", decisions["blue-1"])]
    assert metrics.reviews.labels("blue_review")._value.get() == 1
    assert consumer.last_committed() == {TP("uploads", 0): 2}
