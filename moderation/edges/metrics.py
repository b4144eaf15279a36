"""Every Prometheus metric the worker exports, defined once against an injected registry.

Names follow Prometheus conventions: counters end in ``_total``, durations are
``_seconds`` histograms, gauges are plain nouns. The README lists them.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "moderation"
STAGES = ("validate", "infer", "score", "publish")
INTERNAL_STAGES = ("parse", "fetch", "validate", "infer", "score", "publish")
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        p = PREFIX
        self.messages = Counter(
            f"{p}_messages_total", "Upload events settled, by outcome (decided, "
            "dead_lettered, duplicate_skipped)", ["outcome"], registry=registry)
        self.dead_letters = Counter(
            f"{p}_dead_letters_total", "Upload events dead-lettered, by error type",
            ["error_type"], registry=registry)
        self.decisions = Counter(
            f"{p}_decisions_total", "Decisions published, by result (allow, flag)",
            ["decision"], registry=registry)
        self.flags = Counter(
            f"{p}_flags_total", "Policies flagged in published decisions", ["policy"],
            registry=registry)
        self.shadow_flags = Counter(
            f"{p}_shadow_flags_total", "Shadow policies that matched in published decisions "
            "(reported, never flagging)", ["policy"], registry=registry)
        self.reviews = Counter(
            f"{p}_reviews_total", "Uploads sent to the review topic, by the review policy "
            "that matched", ["policy"], registry=registry)
        self.batch_size = Histogram(
            f"{p}_batch_size", "Images per inference batch", buckets=_BATCH_BUCKETS,
            registry=registry)
        self.stage_seconds = Histogram(
            f"{p}_stage_seconds", "Time per batch in each stage (validate, infer, score, "
            "publish)", ["stage"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.end_to_end_seconds = Histogram(
            f"{p}_end_to_end_seconds", "From the event's created_at (else the Kafka "
            "timestamp) to the decision", buckets=_LATENCY_BUCKETS, registry=registry)
        self.consumer_lag = Gauge(
            f"{p}_consumer_lag", "Records behind the fetch high watermark, per partition",
            ["topic", "partition"], registry=registry)
        self.assigned_partitions = Gauge(
            f"{p}_assigned_partitions", "Input partitions assigned to this worker",
            registry=registry)
        self.in_flight = Gauge(
            f"{p}_in_flight_messages", "Polled messages without an acknowledged decision",
            registry=registry)
        self.policy_version = Gauge(
            f"{p}_policy_version", "Version of the policy set in use (0 = none loaded)",
            registry=registry)
        self.policy_reloads = Counter(
            f"{p}_policy_reloads_total", "Policy set switches, by result (ok, error)",
            ["result"], registry=registry)
        self.triton_errors = Counter(
            f"{p}_triton_errors_total", "Failed Triton calls, by kind (unavailable, rejected, "
            "other)", ["kind"], registry=registry)
        self.publish_errors = Counter(
            f"{p}_publish_errors_total", "Decision or dead-letter sends the broker did not "
            "acknowledge (retried)", registry=registry)
        self.dedupe_errors = Counter(
            f"{p}_dedupe_errors_total", "Decision-ledger (Redis) calls that failed; uploads "
            "were decided again", registry=registry)
        self.internal_errors = Counter(
            f"{p}_internal_errors_total", "Uploads dead-lettered as internal_error (an "
            "unexpected exception while handling that one upload), by stage", ["stage"],
            registry=registry)
        self.isolated = Counter(
            f"{p}_isolated_uploads_total", "Uploads processed alone because an earlier attempt "
            "did not finish (worker died, batch failed), by cause", ["cause"], registry=registry)
        self.attempt_errors = Counter(
            f"{p}_attempt_counter_errors_total", "Attempt-counter (Redis) calls that failed; "
            "the poison-record guard was skipped for them", registry=registry)
        self.poll_errors = Counter(
            f"{p}_poll_errors_total", "Consumer polls that raised; the worker backs off and "
            "polls again", registry=registry)
        self.recent_errors = Counter(
            f"{p}_recent_index_errors_total", "Recent-uploads index (Redis) writes that failed; "
            "those uploads are missing from the console", registry=registry)
        self.commits = Counter(
            f"{p}_offset_commits_total", "Offset commits, by result (ok, error)", ["result"],
            registry=registry)
        self.ready = Gauge(
            f"{p}_ready", "1 when broker, Triton model and policy set are all available",
            registry=registry)
        for stage in STAGES:
            self.stage_seconds.labels(stage)
        for outcome in ("decided", "dead_lettered", "duplicate_skipped"):
            self.messages.labels(outcome)
        for decision in ("allow", "flag"):
            self.decisions.labels(decision)
        for stage in INTERNAL_STAGES:
            self.internal_errors.labels(stage)
        for cause in ("unfinished_attempt", "failed_batch"):
            self.isolated.labels(cause)
        for kind in ("unavailable", "rejected", "other"):
            self.triton_errors.labels(kind)
