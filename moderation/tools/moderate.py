"""Score image files against a policy set through any ``Encoder`` (the ``moderate`` command)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from moderation.contract.errors import ImageError
from moderation.contract.events import Verdict
from moderation.core.images import DecodeLimits, decode_image
from moderation.core.policy import PolicySet
from moderation.core.scoring import score, verdicts
from moderation.edges.encoders import Encoder, RejectedImage, compile_for


@dataclass(frozen=True)
class FileResult:
    file: str
    decision: str  # "allow" | "flag" | "error"
    flagged_policies: list[str] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdicts"] = [v._asdict() for v in self.verdicts]
        if self.error is None:
            data.pop("error")
        return data


def moderate_files(
    paths: Sequence[Path], encoder: Encoder, policies: PolicySet,
    limits: DecodeLimits = DecodeLimits(),
) -> list[FileResult]:
    """Decide every file; unreadable or invalid images get an ``error`` result, not an abort."""
    matrix = compile_for(encoder, policies)
    results: dict[int, FileResult] = {}
    good: list[tuple[int, bytes]] = []
    for i, path in enumerate(paths):
        try:
            data = path.read_bytes()
            decode_image(data, limits)  # reject bad input here with a precise reason
            good.append((i, data))
        except OSError as exc:
            results[i] = FileResult(str(path), "error", error=f"unreadable: {exc.strerror}")
        except ImageError as exc:
            results[i] = FileResult(str(path), "error", error=f"{exc.reason}: {exc}")
    if good:
        try:
            emb = encoder.embed_images([d for _, d in good])
        except RejectedImage as exc:  # limits differ on the server: report, do not crash
            for i, _ in good:
                results[i] = FileResult(str(paths[i]), "error", error=str(exc))
            emb = np.zeros((0, 0), np.float32)
        if len(emb):
            s = score(emb, matrix)
            for row, (i, _) in enumerate(good):
                vs = verdicts(s, matrix, row)
                flagged = [v.policy for v in vs if v.flagged and v.action == "flag"]
                results[i] = FileResult(str(paths[i]), "flag" if flagged else "allow",
                                        flagged, vs)
    return [results[i] for i in range(len(paths))]


def format_results(results: Sequence[FileResult]) -> str:
    """A plain table: file, decision, flagged policies, and the top-scoring policy."""
    rows = [("file", "decision", "flagged", "top policy (score / threshold)")]
    for r in results:
        if r.error:
            rows.append((r.file, r.decision, "-", r.error))
            continue
        top = max(r.verdicts, key=lambda v: v.score - v.threshold)
        rows.append((r.file, r.decision, ",".join(r.flagged_policies) or "-",
                     f"{top.policy} ({top.score:.3f} / {top.threshold:.3f})"))
    widths = [max(len(row[c]) for row in rows) for c in range(3)]
    return "\n".join(
        "  ".join(row[c].ljust(widths[c]) for c in range(3)) + "  " + row[3] for row in rows)
