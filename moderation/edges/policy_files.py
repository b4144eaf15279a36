"""Policy files on disk: read a directory of YAML policies, and edit thresholds in place
keeping comments and layout."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from moderation.contract.errors import PolicyError
from moderation.core.policy import Policy, PolicySet, build_set, parse_policy

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


def load_policy_dir(directory: Path) -> PolicySet:
    """Every ``*.yaml``/``*.yml`` file in ``directory``; a file holds one policy or a list."""
    if not directory.is_dir():
        raise PolicyError(f"{directory}: not a directory of policy files")
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise PolicyError(f"{directory}: no *.yaml policy files")
    found: list[tuple[Policy, str]] = []
    for path in files:
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise PolicyError(f"{path}: cannot read YAML: {exc}") from exc
        items = doc if isinstance(doc, list) else [doc]
        for i, item in enumerate(items):
            source = str(path) if len(items) == 1 else f"{path}[{i}]"
            found.append((parse_policy(item, source), source))
    return build_set(found)
