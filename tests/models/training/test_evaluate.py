"""Evaluation metrics and threshold calibration (pure logic: a fake encoder, no model)."""

from collections.abc import Sequence

import numpy as np
import pytest

from moderation.core.policy import Policy, PolicySet
from moderation.models.training import evaluate as ev
from moderation.models.training.eval_labels import POLICY_EMOJI, policies_of


def test_metrics_count_tp_fp_fn() -> None:
    flagged = np.array([[1], [1], [0], [0]], bool)
    truth = np.array([[1], [0], [1], [0]], bool)
    (row,) = ev.metrics(flagged, truth, ["p"])
    assert row.support == 2
    assert row.precision == pytest.approx(0.5) and row.recall == pytest.approx(0.5)
    assert row.f1 == pytest.approx(0.5)


def test_macro_f1_ignores_policies_without_support() -> None:
    rows = [ev.PolicyMetrics("a", 3, 1, 1, 1.0), ev.PolicyMetrics("b", 0, 0, 0, 0.0),
            ev.PolicyMetrics("c", 2, 0.5, 0.5, 0.5)]
    assert ev.macro_f1(rows) == pytest.approx(0.75)


def test_labels_follow_the_answer_key() -> None:
    assert policies_of(["🔪", "🐕"]) == {"weapons"}
    assert policies_of(["🍺", "💀"]) == {"alcohol", "disturbing"}
    assert policies_of(["🍴"]) == set()
    flat = [c for members in POLICY_EMOJI.values() for c in members]
    assert len(flat) == len(set(flat))


class KeyEncoder:
    """Embeds a scene as the sum of one-hot vectors of its emoji (a perfect toy model)."""

    model_name = "key"

    def __init__(self, scenes: Sequence[ev.Scene], vocab: list[str]) -> None:
        self.by_image = {s.image: s.chars for s in scenes}
        self.vocab = vocab

    def _vec(self, chars: Sequence[str]) -> np.ndarray:
        v = np.zeros(len(self.vocab), np.float32)
        for c in chars:
            v[self.vocab.index(c)] = 1.0
        return v / np.linalg.norm(v)

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        return np.stack([self._vec(self.by_image[i]) for i in images])

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vec([t]) for t in texts])


def test_calibration_finds_a_threshold_that_separates() -> None:
    vocab = ["🔪", "🐕", "🌻"]
    combos = [("🔪",), ("🔪", "🐕"), ("🐕",), ("🌻",), ("🐕", "🌻"), ("🔪", "🐕", "🌻")]
    scenes = [ev.Scene(bytes([i]), chars, frozenset(policies_of(chars)))
              for i, chars in enumerate(combos)]
    enc = KeyEncoder(scenes, vocab)
    policies = PolicySet(policies=(Policy(name="weapons", threshold=0.99, prompts=("🔪",)),))
    too_strict = ev.evaluate(enc, policies, scenes)[0]
    assert too_strict.recall < 1.0  # composite scenes score below 0.99
    t = ev.calibrate(enc, policies, scenes)["weapons"]
    assert 0.0 < t < 0.577  # 1/sqrt(3): the weakest positive
    tuned = ev.with_thresholds(policies, {"weapons": t, "unknown": 0.1})
    assert tuned.policies[0].threshold == t and tuned.names == policies.names
    assert ev.evaluate(enc, tuned, scenes)[0].f1 == pytest.approx(1.0)


def _f1_at(t: float, scores: np.ndarray, eligible: np.ndarray, truth: np.ndarray) -> float:
    return ev._prf(eligible & (scores >= t), truth)[2]


def test_the_written_threshold_is_the_one_that_scored_best() -> None:
    # 0.52936 rounds up to 0.5294: a candidate made by rounding it drops the positive it
    # came from, and the threshold then written (below it) let the 0.52081 negative in
    scores = np.array([0.3, 0.51485, 0.52081, 0.52936, 0.6, 0.7], np.float32)
    truth = np.array([False, False, False, True, True, True])
    eligible = np.ones(len(scores), bool)
    t = ev.best_threshold(scores, eligible, truth)
    assert 0.52081 < t <= 0.52936
    assert t == pytest.approx(0.525, abs=0.001)  # the middle of the run that scores 1.0
    assert _f1_at(t, scores, eligible, truth) == 1.0


def test_best_threshold_matches_an_exhaustive_search() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(5, 60))
        scores = rng.uniform(0.2, 0.8, n).astype(np.float32)
        truth = rng.random(n) < 0.4
        eligible = rng.random(n) < 0.9
        t = ev.best_threshold(scores, eligible, truth)
        # every threshold a policy file can hold (3 decimals) in and around the scores
        exhaustive = max(_f1_at(c, scores, eligible, truth) for c in np.arange(190, 821) / 1000)
        assert _f1_at(t, scores, eligible, truth) == pytest.approx(exhaustive)
        assert t == round(t, 3)


def test_scenes_are_seeded_and_labelled() -> None:
    a = ev.build_scenes("noto", per_policy=2, negatives=3, lookalikes=2)
    b = ev.build_scenes("noto", per_policy=2, negatives=3, lookalikes=2)
    assert [s.image for s in a] == [s.image for s in b]
    assert len(a) == 2 * len(POLICY_EMOJI) + 5
    assert {s.style for s in a} == {"noto"}
    for s in a:
        assert s.labels == frozenset(policies_of(s.chars))
    assert sum(bool(s.labels) for s in a) >= 2 * len(POLICY_EMOJI)


def test_gemojione_split_uses_only_emoji_it_has() -> None:
    scenes = ev.build_scenes("gemojione", per_policy=1, negatives=2, lookalikes=1)
    assert all("🩲" not in s.chars for s in scenes)  # EmojiOne 3 predates briefs
    assert len(scenes) == len(POLICY_EMOJI) + 3
    assert {s.style for s in scenes} == {"gemojione"}


def test_a_training_style_split_draws_that_style() -> None:
    twemoji = ev.build_scenes("twemoji", per_policy=1, negatives=2, lookalikes=1)
    noto = ev.build_scenes("noto", per_policy=1, negatives=2, lookalikes=1)
    assert {s.style for s in twemoji} == {"twemoji"}
    assert {s.image for s in twemoji}.isdisjoint({s.image for s in noto})


@pytest.mark.slow
def test_the_validation_split_mixes_every_training_style() -> None:
    val = ev.build_scenes("val", per_policy=4, negatives=10, lookalikes=4)
    assert {s.style for s in val} == set(ev.TRAINING_STYLES)
    assert set(ev.TEST_SPLITS).isdisjoint({"val"}) and "gemojione" not in ev.TRAINING_STYLES
    test = ev.build_scenes("noto", per_policy=4, negatives=10, lookalikes=4)
    assert {s.image for s in val}.isdisjoint({s.image for s in test})
