"""scripts/gpu-bench.sh's parts: the pack check (--dry-run), unpacking on the GPU machine,
and the benchmark's every step on this CPU (--smoke)."""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from moderation.devtools import gpu_bench, gpu_pack

PY = f"{sys.version_info.major}.{sys.version_info.minor}"


def fake_pack(root: Path, python: str = PY, skip: str = "") -> Path:
    """A pack shaped like ``gpu_pack.pack``'s, with placeholder files."""
    pack = root / ".gpu-bench"
    (pack / "wheels").mkdir(parents=True)
    with tarfile.open(pack / "tritonserver.tar.xz", "w:xz") as tar:
        for name in ("tritonserver/bin/tritonserver",
                     "tritonserver/backends/python/libtriton_python.so",
                     f"tritonserver/python_backend_stubs/{python}/triton_python_backend_stub",
                     "tritonserver/lib/libtritonserver.so"):
            if name == skip:
                continue
            data = f"placeholder {name}".encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with zipfile.ZipFile(pack / "wheels" / "demo-1.0-py3-none-any.whl", "w") as zf:
        zf.writestr("demo_pkg/__init__.py", "VALUE = 1\n")
    (pack / "manifest.json").write_text(json.dumps(
        {"python": python, "wheels": ["demo-1.0-py3-none-any.whl"]}))
    return pack


def test_dry_run_without_a_pack_says_how_to_make_one(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_pack, "PACK", tmp_path / ".gpu-bench")
    result = gpu_pack.check()
    assert not result["ok"] and any("--pack" in p for p in result["problems"])
    assert 0 < result["tree_bytes"] < gpu_pack.CARRY_LIMIT


def test_dry_run_accepts_a_complete_pack_and_names_what_is_missing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_pack, "PACK", fake_pack(tmp_path / "good", "3.12"))
    result = gpu_pack.check()
    assert result["ok"], result["problems"]
    assert result["python"] == "3.12" and result["total_mib"] < result["limit_mib"]
    stub = "tritonserver/python_backend_stubs/3.12/triton_python_backend_stub"
    monkeypatch.setattr(gpu_pack, "PACK", fake_pack(tmp_path / "bad", "3.12", skip=stub))
    (gpu_pack.PACK / "wheels" / "demo-1.0-py3-none-any.whl").unlink()
    problems = gpu_pack.check()["problems"]
    assert any(stub in p for p in problems) and any("wheels missing" in p for p in problems)


def test_dry_run_counts_the_pack_against_the_carry_limit(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_pack, "PACK", fake_pack(tmp_path))
    monkeypatch.setattr(gpu_pack, "CARRY_LIMIT", gpu_pack.tree_bytes())
    assert any("> " in p for p in gpu_pack.check()["problems"])


def test_unpack_places_the_stub_for_this_python_and_the_wheels(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gpu_pack, "PACK", fake_pack(tmp_path))
    gpu_pack.unpack(tmp_path / "dest")
    home = tmp_path / "dest" / "triton" / "tritonserver"
    assert (home / "backends" / "python" / "triton_python_backend_stub").read_bytes() \
        .startswith(b"placeholder")
    assert (tmp_path / "dest" / "site" / "demo_pkg" / "__init__.py").exists()


@pytest.mark.slow
@pytest.mark.integration
def test_smoke_runs_every_step_and_reports_them() -> None:
    """Every measurement, on the CPU: the in-process encoder and decoders, and a real
    tritonserver serving the GPU repository's models (as KIND_CPU) fed JPEG bytes."""
    result = gpu_bench.run(argparse.Namespace(smoke=True, bundle="demo", seconds=0.5))
    assert set(result["bare_encoder"]) == {"1", "8", "32", "64", "128"}
    assert all(v > 0 for v in result["bare_encoder"].values())
    assert result["gpu_decode_images_per_s"] > 0 and result["cpu_decode"]["images_per_s"] > 0
    assert [r["in_flight_requests"] for r in result["clip_image"]] == [1, 2]
    for r in result["clip_image"]:
        assert r["images_per_s"] > 0 and r["p50_ms"] <= r["p99_ms"]
    assert 0 < result["ratio_end_to_end_to_bare"] <= result["ratio_end_to_end_to_bare_batch32"]
