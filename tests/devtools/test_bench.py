"""`moderation bench` end to end on a tiny workload (no timing assertions: the numbers are
reported, never asserted), and its pure parts."""

from pathlib import Path

import pytest

from moderation.devtools.bench import BenchConfig, format_report, run_bench
from moderation.devtools.bench_images import encoded_uploads
from moderation.devtools.bench_measures import measure_scoring

REPO = Path(__file__).resolve().parents[2]


def test_uploads_are_photo_like_jpeg_and_png() -> None:
    from moderation.core.images import inspect_image

    uploads = encoded_uploads(5)
    kinds = [inspect_image(u) for u in uploads]
    assert [k[0] for k in kinds] == ["JPEG"] * 4 + ["PNG"]
    assert all(k[1:] == (640, 480) for k in kinds)
    assert all(20_000 < len(u) < 1_500_000 for u in uploads)
    assert len(set(uploads)) == 5 and encoded_uploads(2) == uploads[:2]  # seeded


def test_scoring_measurement_runs_at_the_requested_scale() -> None:
    out = measure_scoring(dim=16, policies=50, prompts=4, batch=8, repeats=2)
    assert set(out) == {"score_s", "decide_s"} and all(v > 0 for v in out.values())


@pytest.mark.slow
@pytest.mark.integration
def test_bench_smoke(tmp_path: Path) -> None:
    cfg = BenchConfig(uploads=12, naive_uploads=4, raw_seconds=0.3, distinct_images=4,
                      worker_counts=(1,), policies_dir=REPO / "policies",
                      console_uploads=2_000)
    lines: list[str] = []
    report = run_bench(cfg, lines.append, state=tmp_path)
    for key in ("raw_images_per_s", "pipeline_images_per_s", "naive_images_per_s",
                "ratio_pipeline_to_raw", "ratio_pipeline_to_naive"):
        assert report[key] > 0, key
    assert set(report["raw_by_batch"]) == {"1", "8", "32"}
    assert set(report["latency_saturation_ms"]) == {"p50_ms", "p95_ms", "p99_ms"}
    assert report["peak_rss_mib"]["triton"] > 0 and report["peak_rss_mib"]["worker-0"] > 0
    recent = report["recent_index"]
    assert recent["off_images_per_s"] > 0 and recent["thumbnails_images_per_s"] > 0
    assert set(recent["worker_cpu_ms_per_image"]) == {"off", "on", "thumbnails"}
    assert report["console"]["uploads"] == 2_000 and report["console"]["backtest_s"] > 0
    assert report["console"]["window"]["uploads"] == 2_000
    wc = report["worker_cpu"]
    assert report["worker_cpu_ms_per_image"] == wc["confluent-kafka"]["raw"]
    for setup in ("confluent-kafka", "kafka-python", "before"):
        for form in ("raw", "json"):
            # CPU time comes in 10 ms clock ticks: 12 uploads may read as 0
            assert wc[setup][form] >= 0 and wc[setup][f"{form}_images_per_s"] > 0
    text = format_report(report)
    assert "worker CPU ms per upload" in text
    assert "recent-uploads index, 1 worker" in text
    assert text.splitlines()[2].startswith("ratio pipeline / raw encoder")
