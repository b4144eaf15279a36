from pathlib import Path

import pytest

from moderation.contract.errors import PolicyError
from moderation.edges.policy_files import load_policy_dir, write_thresholds


def test_thresholds_written_in_place_keeping_comments(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "# the weapons rule\nname: a\nthreshold: 0.5\nprompts:\n  - x  # keep me\n")
    (tmp_path / "b.yaml").write_text("name: b\nthreshold: 0.5\nprompts: [y]\n")
    changed = write_thresholds(tmp_path, {"a": 0.4321})
    assert changed == [tmp_path / "a.yaml"]
    text = (tmp_path / "a.yaml").read_text()
    assert "# the weapons rule" in text and "# keep me" in text
    ps = load_policy_dir(tmp_path)
    assert {p.name: p.threshold for p in ps.policies} == {"a": 0.432, "b": 0.5}


def test_file_without_a_top_level_threshold_line(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("{name: a, threshold: 0.5, prompts: [x]}\n")
    with pytest.raises(PolicyError, match="expected one top-level 'threshold:' line"):
        write_thresholds(tmp_path, {"a": 0.3})
