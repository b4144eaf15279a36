"""The benign-photo check: every photograph bundled in scikit-image, scikit-learn and
matplotlib, scored with the policies. None shows anything a policy covers (cameramen,
cats, coffee, coins, flowers, rockets, cells...), so every flag is a false positive: the
first thing a new user tries is a photo, not an emoji.

The same check runs on any folder of images a team knows to be benign (``moderation models
eval --benign-dir DIR``): the share of its own ordinary uploads a policy set would flag."""

from __future__ import annotations

import importlib.util
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from moderation.contract.errors import BundleError, ConfigError, ImageError
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


def folder_paths(folder: Path) -> list[tuple[str, Path]]:
    """(subfolder, path) of every PNG/JPEG under ``folder``, recursively, sorted by path."""
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder of images")
    return [(str(p.parent.relative_to(folder)), p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix.lower() in SUFFIXES]


@dataclass(frozen=True)
class PhotoResult:
    name: str  # package (or subfolder)/file
    flagged: tuple[str, ...]
    top_policy: str
    top_score: float
    top_threshold: float
    error: str = ""  # why the image could not be scored (it is counted, never dropped)


BATCH = 64


def _embed(encoder: Encoder,
           paths: Sequence[Path]) -> tuple[list[int], list[str], NDArray[Any]]:
    """Embeddings of the images that decode; the others' errors, by index."""
    rows: list[NDArray[Any]] = []
    ok: list[int] = []
    errors = [""] * len(paths)
    for start in range(0, len(paths), BATCH):
        chunk = list(range(start, min(start + BATCH, len(paths))))
        data = [paths[i].read_bytes() for i in chunk]
        try:
            rows.append(encoder.embed_images(data))
            ok += chunk
            continue
        except ImageError:
            pass
        for i, b in zip(chunk, data, strict=True):  # find the ones that do not decode
            try:
                rows.append(encoder.embed_images([b]))
                ok.append(i)
            except ImageError as e:
                errors[i] = str(e)
    return ok, errors, np.concatenate(rows) if rows else np.zeros((0, 1), np.float32)


def check(encoder: Encoder, policies: PolicySet,
          paths: Sequence[tuple[str, Path]] | None = None) -> list[PhotoResult]:
    """Score the bundled photographs (or ``paths``) with ``policies``."""
    paths = photo_paths() if paths is None else paths
    matrix = compile_for(encoder, policies)
    ok, errors, emb = _embed(encoder, [p for _, p in paths])
    s = score(emb, matrix) if ok else None
    row = {i: r for r, i in enumerate(ok)}
    out = []
    for i, (group, path) in enumerate(paths):
        name = path.name if group == "." else f"{group}/{path.name}"  # "." = the folder itself
        if s is None or i not in row:
            out.append(PhotoResult(name, (), "", 0.0, 0.0, errors[i]))
            continue
        r = row[i]
        # closest to flagging: the highest score relative to its threshold
        k = int(np.argmax(s.score[r] - matrix.thresholds))
        flagged = tuple(n for j, n in enumerate(matrix.names) if s.flagged[r, j])
        out.append(PhotoResult(name, flagged, matrix.names[k], round(float(s.score[r, k]), 3),
                               round(float(matrix.thresholds[k]), 3)))
    return out


def summary(results: list[PhotoResult], every_image: bool = True) -> dict[str, object]:
    """The JSON form of a check: counts, then every result or (``every_image=False``) only
    the flagged and unreadable ones."""
    return {"flagged": sum(bool(r.flagged) for r in results), "total": len(results),
            "unreadable": sum(bool(r.error) for r in results),
            "results": [r.__dict__ for r in results if every_image or r.flagged or r.error]}


def format_report(results: list[PhotoResult],
                  title: str = "benign photographs (scikit-image, scikit-learn, matplotlib)",
                  every_image: bool = True) -> str:
    """The share flagged; then every image, or (``every_image=False``, for large folders)
    the count per policy and only the flagged and unreadable images."""
    flagged = [r for r in results if r.flagged]
    failed = [r for r in results if r.error]
    head = f"{title}: {len(flagged)} of {len(results)} flagged"
    lines = [head + (f", {len(failed)} unreadable" if failed else ""), ""]
    if not every_image:
        counts = Counter(n for r in flagged for n in r.flagged).most_common()
        lines += [f"  {n}: {c}" for n, c in counts] + ([""] if counts else [])
    for r in results:
        if r.error:
            lines.append(f"  {r.name:<48} UNREADABLE {r.error}")
        elif r.flagged or every_image:
            mark = "FLAGGED " + ",".join(r.flagged) if r.flagged else "allowed"
            lines.append(f"  {r.name:<48} {mark:<24} closest: {r.top_policy} "
                         f"{r.top_score:.3f} (threshold {r.top_threshold:.3f})")
    return "\n".join(lines)
