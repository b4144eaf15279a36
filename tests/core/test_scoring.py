import numpy as np
import pytest

from moderation.core.policy import Policy, PolicySet
from moderation.core.scoring import compile_policies, score, verdicts


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, np.float32)
    return v / np.linalg.norm(v)


# a 3-d toy embedding space: x = weapons, y = cutlery, z = animals
EMB = {
    "a gun": unit(1, 0, 0),
    "a knife": unit(1, 0.3, 0),
    "fork and knife": unit(0.2, 1, 0),
    "a slot machine": unit(0, 0, 1),
}


def policy_set(weapon_threshold: float = 0.6) -> PolicySet:
    return PolicySet(policies=(
        Policy(name="weapons", threshold=weapon_threshold, prompts=("a gun", "a knife"),
               counter_prompts=("fork and knife",)),
        Policy(name="gambling", threshold=0.9, prompts=("a slot machine",)),
    ))


def test_score_is_best_prompt_cosine_and_reports_top_prompt() -> None:
    m = compile_policies(policy_set(), EMB)
    img = unit(1, 0.35, 0)  # closest to "a knife"
    s = score(img[None], m)
    assert s.score[0, 0] == pytest.approx(float(img @ EMB["a knife"]), abs=1e-6)
    vs = verdicts(s, m, 0)
    assert vs[0].top_prompt == "a knife"
    assert vs[0].flagged and not vs[1].flagged


def test_counter_prompt_vetoes_a_flag_above_threshold() -> None:
    m = compile_policies(policy_set(weapon_threshold=0.3), EMB)
    cutlery = unit(0.5, 1, 0)  # cos to "a knife" ~0.7 > 0.3, but closer to the counter
    s = score(cutlery[None], m)
    assert s.score[0, 0] > 0.3
    assert s.counter[0, 0] > s.score[0, 0]
    assert not s.flagged[0, 0]


def test_threshold_applies_per_policy() -> None:
    img = unit(1, 0, 0)
    assert score(img[None], compile_policies(policy_set(0.99), EMB)).flagged[0, 0]
    low = compile_policies(policy_set(1.0), EMB)
    img2 = unit(1, 0.1, 0)
    assert not score(img2[None], low).flagged[0, 0]


def test_policy_without_counter_prompts_has_no_veto() -> None:
    m = compile_policies(policy_set(), EMB)
    s = score(unit(0, 0, 1)[None], m)
    assert np.isneginf(s.counter[0, 1])
    assert s.flagged[0, 1]


def test_batch_scoring_matches_row_by_row() -> None:
    rng = np.random.default_rng(0)
    m = compile_policies(policy_set(0.2), EMB)
    batch = rng.normal(size=(17, 3)).astype(np.float32)
    batch /= np.linalg.norm(batch, axis=1, keepdims=True)
    whole = score(batch, m)
    for i in range(len(batch)):
        one = score(batch[i:i + 1], m)
        np.testing.assert_allclose(one.score[0], whole.score[i], rtol=1e-6)
        np.testing.assert_array_equal(one.flagged[0], whole.flagged[i])


def test_empty_batch() -> None:
    s = score(np.zeros((0, 3), np.float32), compile_policies(policy_set(), EMB))
    assert s.flagged.shape == (0, 2)


def test_counter_must_win_by_the_margin_to_veto() -> None:
    emb = {"a knife": unit(1, 0, 0), "fork and knife": unit(0, 1, 0)}
    img = unit(1, 1.04, 0)  # slightly closer to the counter-prompt (by about 0.03)

    def flagged(margin: float) -> bool:
        p = Policy(name="weapons", threshold=0.5, prompts=("a knife",),
                   counter_prompts=("fork and knife",), counter_margin=margin)
        return bool(score(img[None], compile_policies(PolicySet(policies=(p,)), emb)).flagged[0, 0])

    assert flagged(0.05)
    assert not flagged(0.0)
