"""Per-policy precision, recall and F1 of a bundle + policy set on rendered emoji scenes.

Every split is built here from a seed that training never uses: new compositions at a
larger canvas (256 px, wider than any training canvas), PNG/JPEG-encoded and decoded
through the serving path.
  - ``noto``, ``twemoji``, ``openmoji``, ``fluent``: held-out scenes in each training style;
  - ``gemojione``: the same kind of scenes drawn with EmojiOne art, never used in training;
  - ``val``: scenes in the training styles (one style per scene) from another seed, the
    only split ``--calibrate`` tunes thresholds on, so test numbers are not fitted to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from moderation.core.policy import PolicySet
from moderation.core.scoring import PolicyMatrix, not_vetoed, score
from moderation.edges.encoders import Encoder, compile_for
from moderation.models.training import emoji_data as ed
from moderation.models.training import emoji_styles as es
from moderation.models.training.eval_labels import (
    LOOKALIKES,
    POLICY_EMOJI,
    is_labelled,
    policies_of,
)

TRAINING_STYLES = ("noto", "twemoji", "openmoji", "fluent")
HELD_OUT_STYLE = "gemojione"
SPLIT_SEEDS = {"val": 1001, "noto": 1002, "gemojione": 1003, "twemoji": 1004,
               "openmoji": 1005, "fluent": 1006}
TEST_SPLITS = (*TRAINING_STYLES, HELD_OUT_STYLE)
TITLES = {
    "noto": "held-out Noto scenes (training style, unseen compositions)",
    "twemoji": "held-out Twemoji scenes (training style, unseen compositions)",
    "openmoji": "held-out OpenMoji scenes (training style, unseen compositions)",
    "fluent": "held-out Fluent scenes (training style, unseen compositions)",
    "gemojione": "EmojiOne art, a style never used in training",
    "val": "validation scenes, training styles (thresholds are fitted here)",
}
CANVAS = 256


@dataclass(frozen=True)
class Scene:
    image: bytes
    chars: tuple[str, ...]
    labels: frozenset[str]
    style: str = ""


def _style_sources(names: Sequence[str], noto: ed.NotoRenderer,
                   seqs: list[str]) -> dict[str, ed.GlyphSource]:
    npm = es.renderers([n for n in names if n in es.STYLES], seqs)
    out: dict[str, ed.GlyphSource] = {}
    for n in names:
        out[n] = noto if n == "noto" else ed.gemojione_renderer() if n == HELD_OUT_STYLE else npm[n]
    return out


def build_scenes(split: str, per_policy: int = 60, negatives: int = 300,
                 lookalikes: int = 150) -> list[Scene]:
    """Positives for every policy, random benign scenes, and look-alike hard negatives."""
    seed = SPLIT_SEEDS[split]
    noto = ed.NotoRenderer()
    catalogue = ed.renderable(ed.load_catalogue(), noto)
    seqs = [s for e in catalogue for s in (e.char, *e.variants)]
    sources = _style_sources(TRAINING_STYLES if split == "val" else (split,), noto, seqs)
    # a class takes part when every style of the split draws it
    catalogue = [e for e in catalogue
                 if all(s.glyph(e.char) is not None for s in sources.values())]
    available = {e.char: e for e in catalogue}
    benign = [e.char for e in catalogue if not is_labelled(e.char)]
    looks = [c for c in LOOKALIKES if c in available]
    rng = np.random.default_rng(seed)

    def variant(c: str, source: ed.GlyphSource) -> str:
        options = [c, *(v for v in available[c].variants if source.glyph(v) is not None)]
        return options[int(rng.integers(0, len(options)))]

    def scene(first: str) -> Scene:
        style = list(sources)[int(rng.integers(0, len(sources)))]
        source = sources[style]
        extra = int(rng.choice([0, 1, 2], p=[0.5, 0.3, 0.2]))
        chars = [first, *(benign[int(i)] for i in rng.integers(0, len(benign), extra))]
        order = rng.permutation(len(chars))
        glyphs = [source.glyph(variant(chars[i], source)) for i in order]
        img = ed.compose(rng, [g for g in glyphs if g is not None], CANVAS)
        fmt = "JPEG" if rng.random() < 0.5 else "PNG"
        data = ed.encode_image(img, fmt, quality=int(rng.integers(60, 96)))
        return Scene(data, tuple(chars), frozenset(policies_of(chars)), style)

    scenes = []
    for members in POLICY_EMOJI.values():
        present = [c for c in members if c in available]
        if not present:
            continue
        scenes += [scene(present[int(rng.integers(0, len(present)))]) for _ in range(per_policy)]
    scenes += [scene(benign[int(rng.integers(0, len(benign)))]) for _ in range(negatives)]
    scenes += [scene(looks[int(rng.integers(0, len(looks)))]) for _ in range(lookalikes)]
    return scenes


@dataclass(frozen=True)
class PolicyMetrics:
    policy: str
    support: int
    precision: float
    recall: float
    f1: float


def _prf(pred: NDArray[Any], truth: NDArray[Any]) -> tuple[float, float, float]:
    tp = float(np.sum(pred & truth))
    fp = float(np.sum(pred & ~truth))
    fn = float(np.sum(~pred & truth))
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def truth_matrix(scenes: Sequence[Scene], names: Sequence[str]) -> NDArray[Any]:
    return np.array([[n in s.labels for n in names] for s in scenes], bool).reshape(
        len(scenes), len(names))


def metrics(flagged: NDArray[Any], truth: NDArray[Any],
            names: Sequence[str]) -> list[PolicyMetrics]:
    out = []
    for k, name in enumerate(names):
        p, r, f = _prf(flagged[:, k], truth[:, k])
        out.append(PolicyMetrics(name, int(truth[:, k].sum()), p, r, f))
    return out


def macro_f1(rows: Sequence[PolicyMetrics]) -> float:
    scored = [r.f1 for r in rows if r.support > 0]
    return float(np.mean(scored)) if scored else 0.0


def embed_scenes(encoder: Encoder, scenes: Sequence[Scene], batch: int = 64) -> NDArray[Any]:
    parts = [encoder.embed_images([s.image for s in scenes[i:i + batch]])
             for i in range(0, len(scenes), batch)]
    return np.concatenate(parts)


def evaluate(encoder: Encoder, policies: PolicySet, scenes: Sequence[Scene],
             matrix: PolicyMatrix | None = None) -> list[PolicyMetrics]:
    matrix = matrix or compile_for(encoder, policies)
    s = score(embed_scenes(encoder, scenes), matrix)
    return metrics(s.flagged, truth_matrix(scenes, matrix.names), matrix.names)


def with_thresholds(policies: PolicySet, thresholds: dict[str, float]) -> PolicySet:
    """The policies with these thresholds in place of their own (others unchanged)."""
    return PolicySet(policies=tuple(
        p.model_copy(update={"threshold": thresholds.get(p.name, p.threshold)})
        for p in policies.policies))


def best_threshold(scores: NDArray[Any], eligible: NDArray[Any], truth: NDArray[Any]) -> float:
    """The threshold, at the 3 decimals policy files hold, that maximises F1 of
    ``eligible & (scores >= t)``; of a run of equally good ones, the middle (the widest margin
    either side). Every candidate is scored exactly as it will be written and compared, so
    the threshold written is the one that scored best."""
    lo = int(np.floor(float(scores.min()) * 1000)) if len(scores) else 0
    hi = int(np.ceil(float(scores.max()) * 1000)) + 1 if len(scores) else 1
    # float32, as PolicyMatrix holds thresholds, so a score on the edge compares as it will
    grid = (np.arange(lo, hi + 1) / 1000).astype(np.float32)
    f1 = np.array([_prf(eligible & (scores >= t), truth)[2] for t in grid])
    best = np.flatnonzero(f1 == f1.max())
    run_end = 0  # the first run of consecutive grid points at the best F1
    while run_end + 1 < len(best) and best[run_end + 1] == best[run_end] + 1:
        run_end += 1
    return round(float(grid[best[run_end // 2]]), 3)


def calibrate(encoder: Encoder, policies: PolicySet, scenes: Sequence[Scene]) -> dict[str, float]:
    """Per policy, the threshold that maximises F1 on ``scenes``."""
    matrix = compile_for(encoder, policies)
    s = score(embed_scenes(encoder, scenes), matrix)
    truth = truth_matrix(scenes, matrix.names)
    return {name: best_threshold(s.score[:, k],
                                 not_vetoed(s.score[:, k], s.counter[:, k], matrix.margins[k]),
                                 truth[:, k])
            for k, name in enumerate(matrix.names)}


def format_table(title: str, rows: Sequence[PolicyMetrics]) -> str:
    lines = [f"{title}", "", "| policy | support | precision | recall | F1 |",
             "|---|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r.policy} | {r.support} | {r.precision:.3f} | {r.recall:.3f} | "
                     f"{r.f1:.3f} |")
    lines.append(f"| **macro** | {sum(r.support for r in rows)} | "
                 f"{np.mean([r.precision for r in rows if r.support]):.3f} | "
                 f"{np.mean([r.recall for r in rows if r.support]):.3f} | "
                 f"**{macro_f1(rows):.3f}** |")
    return "\n".join(lines)
