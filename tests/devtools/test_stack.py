"""`moderation dev up|status|env|down`: real Tansu, redis-server and tritonserver processes."""

from pathlib import Path

import pytest

from moderation.cli.main import main
from moderation.config import Settings
from moderation.devtools.processes import _pid_alive
from moderation.devtools.stack import SERVICES, read_state

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_up_is_idempotent_and_down_stops(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MODERATION_DEV__STATE_DIR", str(tmp_path))
    monkeypatch.chdir(tmp_path)  # works from any directory
    assert main(["dev", "up"]) == 0
    first = read_state(Settings())
    pids = {name: int(first[name]["pid"]) for name in SERVICES}
    try:
        assert main(["dev", "up"]) == 0
        again = read_state(Settings())
        assert {n: int(again[n]["pid"]) for n in SERVICES} == pids  # second up: no-op
        assert main(["dev", "status"]) == 0
        capsys.readouterr()
        assert main(["dev", "env"]) == 0
        env = capsys.readouterr().out
        assert f"MODERATION_TRITON__URL=127.0.0.1:{first['triton']['grpc']}" in env
        kafka = f"127.0.0.1:{first['kafka']['port']}"
        redis_url = f"redis://127.0.0.1:{first['redis']['port']}/0"
        assert f"MODERATION_KAFKA__BOOTSTRAP_SERVERS={kafka}" in env
        assert f"MODERATION_REDIS__URL={redis_url}" in env
        for name in ("tritonserver", "tansu", "redis"):
            assert (tmp_path / f"{name}.log").exists()
        # the services are real: a record round-trips through the broker, Redis answers
        import redis
        from kafka import KafkaConsumer, KafkaProducer

        assert redis.Redis.from_url(redis_url).ping()
        producer = KafkaProducer(bootstrap_servers=kafka, acks="all")
        producer.send("smoke", key=b"k", value=b"hello").get(timeout=30)
        producer.close()
        consumer = KafkaConsumer("smoke", bootstrap_servers=kafka, auto_offset_reset="earliest",
                                 consumer_timeout_ms=20_000)
        assert next(iter(consumer)).value == b"hello"
        consumer.close()
    finally:
        assert main(["dev", "down"]) == 0
    assert not any(_pid_alive(pid) for pid in pids.values())
    assert main(["dev", "status"]) == 1
