from pathlib import Path

import pytest

from moderation.contract.errors import PolicyError
from moderation.edges.policy_files import load_policy_dir

REPO = Path(__file__).resolve().parents[2]
DEFAULT_NAMES = {"weapons", "drugs_tobacco", "alcohol", "gambling", "rude_gestures",
                 "disturbing", "swimwear_underwear"}


def test_default_policies_are_complete() -> None:
    ps = load_policy_dir(REPO / "policies")
    assert set(ps.names) == DEFAULT_NAMES
    for p in ps.policies:
        assert p.prompts and p.counter_prompts and p.action == "flag"
        assert 0.0 < p.threshold < 1.0


def write(tmp: Path, name: str, text: str) -> Path:
    (tmp / name).write_text(text)
    return tmp


def test_error_names_file_policy_and_field(tmp_path: Path) -> None:
    write(tmp_path, "bad.yaml", "name: guns\nthreshold: 3\nprompts: [a gun]\n")
    with pytest.raises(PolicyError) as exc:
        load_policy_dir(tmp_path)
    msg = str(exc.value)
    assert "bad.yaml" in msg and "policy 'guns'" in msg and "field 'threshold'" in msg


@pytest.mark.parametrize("body,field", [
    ("name: x\nthreshold: 0.5\nprompts: []\n", "prompts"),
    ("name: x\nthreshold: 0.5\nprompts: ['  ']\n", "prompts"),
    ("name: x\nthreshold: 0.5\nprompts: [a, a]\n", "prompts"),
    ("name: Bad Name\nthreshold: 0.5\nprompts: [a]\n", "name"),
    ("name: x\nthreshold: 0.5\nprompts: [a]\naction: delete\n", "action"),
    ("name: x\nthreshold: 0.5\nprompts: [a]\ncolour: red\n", "colour"),
    ("name: x\nprompts: [a]\n", "threshold"),
])
def test_invalid_fields(tmp_path: Path, body: str, field: str) -> None:
    write(tmp_path, "p.yaml", body)
    with pytest.raises(PolicyError, match=f"field .{field}"):
        load_policy_dir(tmp_path)


def test_duplicate_policy_names_across_files(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "name: x\nthreshold: 0.5\nprompts: [a]\n")
    write(tmp_path, "b.yaml", "name: x\nthreshold: 0.5\nprompts: [b]\n")
    with pytest.raises(PolicyError, match=r"already defined in .*a.yaml"):
        load_policy_dir(tmp_path)


def test_file_may_hold_a_list(tmp_path: Path) -> None:
    write(tmp_path, "set.yaml", "- {name: a, threshold: 0.5, prompts: [x]}\n"
                                "- {name: b, threshold: 0.4, prompts: [y], counter_prompts: [z]}\n")
    ps = load_policy_dir(tmp_path)
    assert ps.names == ("a", "b")
    assert ps.texts() == ["x", "y", "z"]


def test_broken_yaml_and_empty_dir(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"no \*.yaml"):
        load_policy_dir(tmp_path)
    write(tmp_path, "p.yaml", "name: [unclosed\n")
    with pytest.raises(PolicyError, match=r"p\.yaml: cannot read YAML"):
        load_policy_dir(tmp_path)


def test_the_action_is_flag_shadow_or_review(tmp_path: Path) -> None:
    for action in ("shadow", "review"):
        write(tmp_path, "watch.yaml",
              f"name: watch\nthreshold: 0.3\nprompts: [a]\naction: {action}\n")
        assert load_policy_dir(tmp_path).policies[0].action == action
    write(tmp_path, "watch.yaml", "name: watch\nthreshold: 0.3\nprompts: [a]\naction: ban\n")
    with pytest.raises(PolicyError, match="policy 'watch': field 'action'"):
        load_policy_dir(tmp_path)
