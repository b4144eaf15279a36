"""Where a lost upload sat: the chaos report's first clue, against the real broker."""

import pytest

from moderation.config import KafkaSettings, Settings
from moderation.devtools.chaos import locate_lost
from moderation.edges.kafka_io import ensure_topics, make_consumer
from moderation.tools.produce import produce_events
from tests.fakes import RED

pytestmark = pytest.mark.integration


def test_lost_uploads_are_located_with_their_committed_offset(kafka_bootstrap: str) -> None:
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    k = KafkaSettings(bootstrap_servers=kafka_bootstrap, input_topic="locate-uploads",
                      group_id="locate-group")
    ensure_topics(k, [k.input_topic], partitions=1)
    produce_events(k, [RED], ["a", "b", "c"], rate_per_s=None)
    group = make_consumer(k)
    group.commit({TopicPartition(k.input_topic, 0): OffsetAndMetadata(1, "", -1)})
    group.close(autocommit=False)
    assert locate_lost(Settings(kafka=k), {"b", "zz"}) == [
        "b partition=0 offset=1 committed=1", f"zz not found in {k.input_topic}"]
