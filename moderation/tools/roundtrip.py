"""One upload through a running deployment: produce a generated image, wait for its
decision (or dead letter) and print it. The Helm chart's ``helm test`` runs this.

    python -m moderation.tools.roundtrip [--timeout SECONDS]

Exit status 0 when a decision came back in time, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Sequence

from moderation.config import KafkaSettings, Settings
from moderation.core.images import solid_png
from moderation.tools.produce import produce_events


def roundtrip(kafka: KafkaSettings, timeout_s: float) -> tuple[str, dict[str, object] | None]:
    """The upload id sent, and its decision (or a dead letter's headers); None on timeout."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka.client_options(), enable_auto_commit=False)
    try:
        topics = [kafka.decision_topic, kafka.dead_letter_topic]
        tps = [TopicPartition(t, p) for t in topics
               for p in sorted(consumer.partitions_for_topic(t) or [])]
        consumer.assign(tps)
        consumer.seek_to_end(*tps)
        for tp in tps:
            consumer.position(tp)  # resolve "end" now, before the upload goes out
        upload_id = f"helm-test-{uuid.uuid4().hex[:12]}"
        produce_events(kafka, [solid_png(64, (40, 120, 200))], [upload_id])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                for r in records:
                    if r.key != upload_id.encode():
                        continue
                    if r.topic == kafka.decision_topic:
                        return upload_id, dict(json.loads(r.value))
                    return upload_id, {"dead_letter": {k: v.decode("utf-8", "replace")
                                                       for k, v in r.headers or []}}
        return upload_id, None
    finally:
        consumer.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--timeout", type=float, default=120.0)
    args = p.parse_args(argv)
    upload_id, outcome = roundtrip(Settings().kafka, args.timeout)
    if outcome is None:
        print(f"no decision for {upload_id} within {args.timeout:.0f} s", file=sys.stderr)
        return 1
    print(json.dumps({"upload_id": upload_id, **outcome}, indent=2))
    return 0 if "dead_letter" not in outcome else 1


if __name__ == "__main__":
    raise SystemExit(main())
