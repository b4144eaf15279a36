"""Policy-set diffs: what `moderation policies diff` reports."""

from __future__ import annotations

from moderation.core.policy import Policy, PolicySet
from moderation.core.policy_diff import diff_sets, format_diff

GUNS = Policy(name="guns", threshold=0.4, prompts=("a gun", "a rifle"),
              counter_prompts=("a water pistol",))
BEER = Policy(name="beer", threshold=0.3, prompts=("beer",))
DICE = Policy(name="dice", threshold=0.35, prompts=("dice",))


def test_nothing_changed() -> None:
    both = PolicySet(policies=(GUNS, BEER))
    assert diff_sets(both, both) == []
    assert format_diff([]) == "no changes"


def test_added_removed_and_changed_policies() -> None:
    old = PolicySet(policies=(GUNS, BEER))
    guns = GUNS.model_copy(update={"threshold": 0.45, "prompts": ("a gun", "a pistol"),
                                   "counter_prompts": ()})
    new = PolicySet(policies=(guns, DICE))
    changes = diff_sets(old, new)
    assert [(c.name, c.kind) for c in changes] == [("guns", "changed"), ("dice", "added"),
                                                  ("beer", "removed")]
    assert changes[0].details == ("threshold 0.400 -> 0.450", "prompt added: 'a pistol'",
                                  "prompt removed: 'a rifle'",
                                  "counter-prompt removed: 'a water pistol'")
    text = format_diff(changes)
    assert "~ guns (changed)\n    threshold 0.400 -> 0.450" in text
    assert "+ dice (added)" in text and "- beer (removed)" in text


def test_a_reordered_set_is_no_change_to_any_policy() -> None:
    assert diff_sets(PolicySet(policies=(GUNS, BEER)), PolicySet(policies=(BEER, GUNS))) == []
