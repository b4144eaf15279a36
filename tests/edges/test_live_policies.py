"""The worker's view of the policy set: switches, model checks, Redis going away."""

import threading
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from moderation.core.policy import Policy
from moderation.edges.live_policies import LivePolicies
from moderation.edges.metrics import Metrics
from tests.fakes import FakeSource, policy_set


@pytest.fixture()
def source() -> FakeSource:
    return FakeSource()


def test_refresh_switches_to_new_versions_only(source: FakeSource) -> None:
    metrics = Metrics(CollectorRegistry())
    live = LivePolicies(source, lambda: "fake@1", metrics)
    assert live.refresh() is None and live.active is None  # nothing applied yet
    v1 = source.publish(policy_set())
    first = live.refresh()
    assert first is not None and first.version == v1 and first.model == "fake@1"
    assert live.refresh() is first  # same version: no reload
    v2 = source.publish(policy_set(extra=[Policy(name="blue", threshold=0.5,
                                                 prompts=("blue",))]))
    second = live.refresh()
    assert second is not None and second.version == v2
    assert second.matrix.names == ("red_things", "blue")
    assert metrics.policy_version._value.get() == v2
    assert metrics.policy_reloads.labels("ok")._value.get() == 2


def test_a_set_embedded_by_another_model_is_refused(source: FakeSource) -> None:
    live = LivePolicies(source, lambda: "fake@1")
    v1 = source.publish(policy_set())
    live.refresh()
    source.publish(policy_set(threshold=0.1), model="other-model@2")
    active = live.refresh()
    assert active is not None and active.version == v1  # kept the set that fits the model


def test_no_model_known_yet_means_no_switch(source: FakeSource) -> None:
    model: list[str | None] = [None]
    live = LivePolicies(source, lambda: model[0])
    source.publish(policy_set())
    assert live.refresh() is None  # Triton down: cannot tell whether the set fits
    model[0] = "fake@1"
    assert live.refresh() is not None


def test_redis_down_keeps_the_last_known_set(source: FakeSource) -> None:
    live = LivePolicies(source, lambda: "fake@1")
    v1 = source.publish(policy_set())
    live.refresh()
    source.down = True
    with pytest.raises(Exception, match="connection refused"):
        live.refresh()
    assert live.active is not None and live.active.version == v1


@pytest.fixture()
def following(source: FakeSource) -> Iterator[LivePolicies]:
    live = LivePolicies(source, lambda: "fake@1", recheck_s=0.5)
    stop = threading.Event()
    thread = threading.Thread(target=live.follow, args=(stop,), daemon=True)
    thread.start()
    yield live
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_follower_applies_notified_versions_and_survives_outages(
        source: FakeSource, following: LivePolicies) -> None:
    v1 = source.publish(policy_set())
    assert following.wait_version(v1, 2.0)
    source.down = True
    source.changed.set()  # wake the follower so it meets the outage
    assert source.failed.wait(5)
    assert following.active is not None and following.active.version == v1
    source.down = False
    v2 = source.publish(policy_set(threshold=0.2))
    assert following.wait_version(v2, 5.0)  # reconnected and caught up
    assert following.active is not None and following.active.matrix.thresholds[0] == \
        pytest.approx(0.2)
