"""kill -9 one of two workers ten times while 2,000 uploads flow (real processes)."""

from pathlib import Path

import pytest

from moderation.config import KafkaSettings, RedisSettings, Settings, TritonSettings
from moderation.devtools.chaos import run_chaos

pytestmark = [pytest.mark.slow, pytest.mark.integration]

REPO = Path(__file__).resolve().parents[2]
_REBALANCE_WORDS = ("partitions assigned", "partitions revoked", "partitions lost",
                    "committed offset", "consuming topic")


def test_no_upload_is_lost_when_workers_are_killed(
        kafka_bootstrap: str, redis_url: str, triton_demo: str, tmp_path: Path) -> None:
    settings = Settings(kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
                        redis=RedisSettings(url=redis_url, key_prefix="chaos-test"),
                        triton=TritonSettings(url=triton_demo))
    lines: list[str] = []
    report = run_chaos(settings, tmp_path, sorted((REPO / "samples").glob("*.*")),
                       REPO / "policies", uploads=2000, kills=10, say=lines.append)
    # the duplicate count for the record, and where any lost upload sat
    print("\n".join([*lines, *report.lost_detail, report.summary()]))
    if report.lost:  # the rebalance story, to read with lost_detail
        for log_file in sorted(tmp_path.glob("chaos-worker-*.log")):
            print(log_file.name, *(line for line in log_file.read_text().splitlines()
                                   if any(w in line for w in _REBALANCE_WORDS)), sep="\n  ")
    assert len(report.kills) == 10
    assert report.lost == []
    assert report.dead_letters == 0  # every sample is a good image
    assert report.decisions >= 2000
    assert report.duplicates == report.decisions - 2000
