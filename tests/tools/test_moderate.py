"""`moderation moderate` in-process and through Triton: a knife is flagged, a dog allowed."""

import json
from pathlib import Path

import pytest

from moderation.cli.main import main


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def check_knife_and_dog(results: list[dict], paths: dict[str, Path]) -> None:  # type: ignore[type-arg]
    by_file = {r["file"]: r for r in results}
    knife, dog = by_file[str(paths["knife"])], by_file[str(paths["dog"])]
    assert knife["decision"] == "flag" and "weapons" in knife["flagged_policies"]
    assert dog["decision"] == "allow" and dog["flagged_policies"] == []
    assert {v["policy"] for v in knife["verdicts"]} >= {"weapons", "alcohol", "gambling"}
    for v in knife["verdicts"]:
        assert set(v) == {"policy", "score", "threshold", "flagged", "top_prompt", "action"}


def test_local_json(capsys: pytest.CaptureFixture[str], knife_and_dog: dict[str, Path]) -> None:
    code, out = run(capsys, "moderate", "--local", "--json",
                    str(knife_and_dog["knife"]), str(knife_and_dog["dog"]))
    assert code == 0
    check_knife_and_dog(json.loads(out), knife_and_dog)


def test_table_and_bad_file(capsys: pytest.CaptureFixture[str], knife_and_dog: dict[str, Path],
                            tmp_path: Path) -> None:
    bad = tmp_path / "notes.txt"
    bad.write_text("hello")
    code, out = run(capsys, "moderate", "--local", str(knife_and_dog["knife"]), str(bad))
    assert code == 1  # an input could not be decided
    lines = out.splitlines()
    assert lines[0].split()[:2] == ["file", "decision"]
    assert any("knife.png" in line and " flag " in line and "weapons" in line for line in lines)
    assert any("notes.txt" in line and "undecodable_image" in line for line in lines)


@pytest.mark.slow
@pytest.mark.integration
def test_through_triton(capsys: pytest.CaptureFixture[str], knife_and_dog: dict[str, Path],
                        triton_demo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODERATION_TRITON__URL", triton_demo)
    code, out = run(capsys, "moderate", "--json",
                    str(knife_and_dog["knife"]), str(knife_and_dog["dog"]))
    assert code == 0
    check_knife_and_dog(json.loads(out), knife_and_dog)


def test_build_trt_dry_run_cli(capsys: pytest.CaptureFixture[str], tiny_hf_bundle: Path,
                               tmp_path: Path) -> None:
    code, out = run(capsys, "models", "build-trt", "--bundle", str(tiny_hf_bundle),
                    "--onnx-dir", str(tmp_path / "onnx"), "--repository", str(tmp_path / "r"),
                    "--dry-run")
    assert code == 0 and out.count("trtexec") == 2
    assert (tmp_path / "r" / "clip_image" / "config.pbtxt").exists()


def test_errors_exit_2_with_a_message(capsys: pytest.CaptureFixture[str],
                                      tmp_path: Path) -> None:
    code = main(["moderate", "--local", "--policies", str(tmp_path), "x.png"])
    assert code == 2
    assert "no *.yaml policy files" in capsys.readouterr().err
