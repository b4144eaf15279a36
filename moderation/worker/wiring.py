"""Wires a worker together from settings: the composition root of ``moderation worker``."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from types import FrameType

from prometheus_client import CollectorRegistry

from moderation.config import Settings
from moderation.contract.errors import EncoderError
from moderation.edges.attempt_counter import RedisAttemptCounter
from moderation.edges.decision_ledger import RedisDecisionLedger
from moderation.edges.encoders import Encoder, TritonEncoder
from moderation.edges.http_endpoints import HealthServer
from moderation.edges.kafka_io import make_consumer, make_publisher
from moderation.edges.live_policies import LivePolicies
from moderation.edges.metrics import Metrics
from moderation.edges.policy_store import RedisPolicyStore
from moderation.edges.recent_index import RedisRecentIndex
from moderation.worker.loop import Worker

log = logging.getLogger(__name__)


def model_name_or_none(encoder: Encoder) -> Callable[[], str | None]:
    def probe() -> str | None:
        try:
            return encoder.model_name
        except EncoderError:
            return None  # Triton not up yet: the policy follower retries
    return probe


def run_worker(settings: Settings, idle_exit_s: float | None = None,
               on_ready: Callable[[Worker, int], None] | None = None,
               handle_signals: bool = True) -> Worker:
    """Run one worker until SIGTERM/SIGINT (or idle exit); returns it for its stats."""
    from threadpoolctl import threadpool_limits

    # OpenBLAS's idle threads spin in sched_yield after each small scoring product: with
    # its default (a thread per core) they cost ~1.9 ms of CPU per upload (README: profile)
    threadpool_limits(settings.worker.blas_threads, user_api="blas")
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    encoder = TritonEncoder.from_settings(settings.triton)
    store = RedisPolicyStore.from_settings(settings.redis)
    policies = LivePolicies(store, model_name_or_none(encoder), metrics)
    stop_follow = threading.Event()
    follower = threading.Thread(target=policies.follow, args=(stop_follow,),
                                name="policies", daemon=True)
    publisher = make_publisher(settings.kafka)
    ledger = (RedisDecisionLedger.from_settings(settings.redis, settings.dedupe.ttl_s)
              if settings.dedupe.enabled else None)
    attempts = RedisAttemptCounter.from_settings(settings.redis, settings.kafka.group_id,
                                                 settings.worker.attempts_ttl_s)
    recent = (RedisRecentIndex.from_settings(settings.redis, settings.recent)
              if settings.recent.enabled else None)
    worker = Worker(settings, make_consumer(settings.kafka), publisher, encoder, policies,
                    metrics, ledger, attempts, recent)
    http = HealthServer(settings.worker.http_host, settings.worker.http_port, registry,
                        worker.readiness, worker.live).start()
    if handle_signals:
        def on_signal(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: draining", signal.Signals(signum).name)
            worker.stop()
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
    follower.start()
    if on_ready:
        on_ready(worker, http.port)
    try:
        worker.run(idle_exit_s)
    finally:
        stop_follow.set()
        publisher.close()
        encoder.close()
        http.stop()
    return worker
