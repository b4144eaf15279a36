"""Edits to policy YAML files that keep their comments and layout (threshold updates)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from moderation.contract.errors import PolicyError

_THRESHOLD = re.compile(r"^threshold:\s*[-+0-9.eE]+\s*(#.*)?$", re.MULTILINE)


def write_thresholds(directory: Path, thresholds: Mapping[str, float]) -> list[Path]:
    """Set ``threshold:`` in each single-policy file whose policy is in ``thresholds``."""
    changed = []
    for path in sorted(directory.glob("*.y*ml")):
        text = path.read_text(encoding="utf-8")
        doc = yaml.safe_load(text)
        if not isinstance(doc, dict) or doc.get("name") not in thresholds:
            continue
        value = thresholds[doc["name"]]
        new, n = _THRESHOLD.subn(
            f"threshold: {value:.3f}  # calibrated: moderation models eval --calibrate", text)
        if n != 1:
            raise PolicyError(f"{path}: expected one top-level 'threshold:' line, found {n}")
        path.write_text(new, encoding="utf-8")
        changed.append(path)
    return changed
