"""`moderation demo` and `moderation produce` from the command line, on a fresh stack."""

import shutil
from pathlib import Path

import pytest

from moderation.cli.main import main
from moderation.contract.events import parse_upload
from moderation.devtools.demo import EXPECTED, Outcome, format_table, summary
from moderation.tools.produce import upload_event

REPO = Path(__file__).resolve().parents[2]


def test_upload_event_is_what_the_worker_parses() -> None:
    upload = parse_upload(upload_event("abc", b"\x89PNG...", surface="chat"))
    assert upload.upload_id == "abc" and upload.image == b"\x89PNG..."
    assert upload.created_at is not None and upload.event is not None
    assert upload.event.surface == "chat"


def test_summary_counts_outcomes_against_expectations() -> None:
    def decision(flagged: list[str]) -> dict[str, object]:
        return {"decision": "flag" if flagged else "allow", "flagged_policies": flagged,
                "verdicts": [{"policy": "weapons", "score": 0.5, "threshold": 0.4}],
                "policy_version": 3, "model": "m@1", "latency_ms": 12.0}

    assert EXPECTED["pistol"] == {"weapons"} and EXPECTED["dog"] == set()
    outcomes = [Outcome("a", "pistol", decision(["weapons"])), Outcome("b", "dog", decision([])),
                Outcome("c", "beer", decision([])), Outcome("d", "x", dead_letter="corrupt_image"),
                Outcome("e", "y")]
    text = summary(outcomes)
    assert "5 uploads: 1 flagged, 2 allowed, 1 dead-lettered, 1 undecided" in text
    assert "flag/allow as expected: 2/3" in text and "policy version 3" in text
    table = format_table(outcomes)
    assert "undecided" in table and "corrupt_image" in table


@pytest.mark.slow
@pytest.mark.integration
def test_demo_decides_every_sample(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MODERATION_DEV__STATE_DIR", str(tmp_path / "state"))
    samples = tmp_path / "samples"
    samples.mkdir()
    for name in ("kitchen_knife.png", "dog.png", "beer.jpg"):
        shutil.copy(REPO / "samples" / name, samples / name)
    (samples / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    monkeypatch.chdir(tmp_path)  # works from any directory
    code = main(["demo", "--samples", str(samples), "--policies", str(REPO / "policies")])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = {line.split()[0]: line.split() for line in out.splitlines()[1:5]}
    assert rows["kitchen_knife"][2] == "flag" and rows["kitchen_knife"][3] == "weapons"
    assert rows["dog"][2] == "allow"
    assert rows["broken"][2] == "dead-letter"
    assert "4 uploads:" in out and "0 undecided" in out
    assert not (tmp_path / "state" / "stack.json").exists()  # the demo stopped its stack
