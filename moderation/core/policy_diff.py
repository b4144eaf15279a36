"""What changes between two policy sets, for ``moderation policies diff`` and the history:
policies added and removed, and per changed policy its prompts, counter-prompts, threshold,
margin, action and description. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from moderation.core.policy import Policy, PolicySet

_SCALARS = ("threshold", "counter_margin", "action", "description")


@dataclass(frozen=True)
class PolicyChange:
    name: str
    kind: Literal["added", "removed", "changed"]
    details: tuple[str, ...] = ()  # one line per change, for a person to read


def _texts(label: str, old: tuple[str, ...], new: tuple[str, ...]) -> list[str]:
    return ([f"{label} added: {t!r}" for t in new if t not in old]
            + [f"{label} removed: {t!r}" for t in old if t not in new])


def _changes(old: Policy, new: Policy) -> tuple[str, ...]:
    lines = []
    for field in _SCALARS:
        before, after = getattr(old, field), getattr(new, field)
        if before != after:
            shown = (f"{before:.3f} -> {after:.3f}" if isinstance(before, float)
                     else f"{before!r} -> {after!r}")
            lines.append(f"{field} {shown}")
    lines += _texts("prompt", old.prompts, new.prompts)
    lines += _texts("counter-prompt", old.counter_prompts, new.counter_prompts)
    return tuple(lines)


def diff_sets(old: PolicySet, new: PolicySet) -> list[PolicyChange]:
    """Changes from ``old`` to ``new``, in ``new``'s order, then the removed policies."""
    before = {p.name: p for p in old.policies}
    after = {p.name: p for p in new.policies}
    out = []
    for policy in new.policies:
        if policy.name not in before:
            out.append(PolicyChange(policy.name, "added", (
                f"threshold {policy.threshold:.3f}, {len(policy.prompts)} prompts, "
                f"{len(policy.counter_prompts)} counter-prompts, action {policy.action}",)))
        elif details := _changes(before[policy.name], policy):
            out.append(PolicyChange(policy.name, "changed", details))
    out += [PolicyChange(p.name, "removed") for p in old.policies if p.name not in after]
    return out


def format_diff(changes: list[PolicyChange]) -> str:
    if not changes:
        return "no changes"
    marks = {"added": "+", "removed": "-", "changed": "~"}
    lines = []
    for c in changes:
        lines.append(f"{marks[c.kind]} {c.name} ({c.kind})")
        lines += [f"    {d}" for d in c.details]
    return "\n".join(lines)
