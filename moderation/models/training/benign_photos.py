"""The benign-photo check: every photograph bundled in scikit-image, scikit-learn and
matplotlib, scored with the policies. None shows anything a policy covers (cameramen,
cats, coffee, coins, flowers, rockets, cells...), so every flag is a false positive: the
first thing a new user tries is a photo, not an emoji."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from moderation.contract.errors import BundleError
from moderation.core.policy import PolicySet
from moderation.core.scoring import score
from moderation.edges.encoders import Encoder, compile_for

# package -> folder (inside it) holding its sample images
SOURCES = {
    "skimage": "data",
    "sklearn": "datasets/images",
    "matplotlib": "mpl-data/sample_data",
}
SUFFIXES = (".png", ".jpg", ".jpeg")


def photo_paths() -> list[tuple[str, Path]]:
    """(package, path) of every bundled PNG/JPEG image, sorted by package then name."""
    out: list[tuple[str, Path]] = []
    for package, folder in SOURCES.items():
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise BundleError(f"{package} is not installed (the benign-photo check reads its "
                              "sample photos): make setup installs it")
        root = Path(next(iter(spec.submodule_search_locations))) / folder
        out += [(package, p) for p in sorted(root.iterdir()) if p.suffix.lower() in SUFFIXES]
    return out


@dataclass(frozen=True)
class PhotoResult:
    name: str  # package/file
    flagged: tuple[str, ...]
    top_policy: str
    top_score: float
    top_threshold: float


def check(encoder: Encoder, policies: PolicySet) -> list[PhotoResult]:
    paths = photo_paths()
    matrix = compile_for(encoder, policies)
    emb = encoder.embed_images([p.read_bytes() for _, p in paths])
    s = score(emb, matrix)
    out = []
    for i, (package, path) in enumerate(paths):
        # closest to flagging: the highest score relative to its threshold
        k = int(np.argmax(s.score[i] - matrix.thresholds))
        flagged = tuple(n for j, n in enumerate(matrix.names) if s.flagged[i, j])
        out.append(PhotoResult(f"{package}/{path.name}", flagged, matrix.names[k],
                               round(float(s.score[i, k]), 3),
                               round(float(matrix.thresholds[k]), 3)))
    return out


def format_report(results: list[PhotoResult]) -> str:
    flagged = [r for r in results if r.flagged]
    lines = [f"benign photographs (scikit-image, scikit-learn, matplotlib): "
             f"{len(flagged)} of {len(results)} flagged", ""]
    for r in results:
        mark = "FLAGGED " + ",".join(r.flagged) if r.flagged else "allowed"
        lines.append(f"  {r.name:<48} {mark:<24} closest: {r.top_policy} "
                     f"{r.top_score:.3f} (threshold {r.top_threshold:.3f})")
    return "\n".join(lines)
