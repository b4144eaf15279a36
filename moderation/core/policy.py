"""Policies: schema and validation (pure; edges/policy_files.py reads them from disk).

A policy is a named set of natural-language prompts describing content to flag, optional
counter-prompts describing look-alike benign content, a threshold on cosine similarity,
and an action. Errors name the file, the policy and the field.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from moderation.contract.errors import PolicyError

NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    description: str = ""
    # flag: a match flags the upload; shadow: a match is scored and reported (verdict,
    # shadow_flagged_policies, moderation_shadow_flags_total) but never changes the decision;
    # review: a match leaves the decision to the other policies and also sends the upload
    # to the review topic for a human queue
    action: Literal["flag", "shadow", "review"] = "flag"
    threshold: float = Field(ge=-1.0, le=1.0)
    counter_margin: float = Field(0.05, ge=0.0, le=1.0)
    prompts: tuple[str, ...] = Field(min_length=1)
    counter_prompts: tuple[str, ...] = ()

    @field_validator("prompts", "counter_prompts")
    @classmethod
    def _non_empty_unique(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        cleaned = tuple(p.strip() for p in v)
        if any(not p for p in cleaned):
            raise ValueError("prompts must be non-empty strings")
        if any(len(p) > 500 for p in cleaned):
            raise ValueError("a prompt is longer than 500 characters")
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("duplicate prompt")
        return cleaned


class PolicySet(BaseModel):
    model_config = ConfigDict(frozen=True)

    policies: tuple[Policy, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.policies)

    def texts(self) -> list[str]:
        """Every distinct prompt and counter-prompt, in a stable order."""
        seen: dict[str, None] = {}
        for p in self.policies:
            for t in (*p.prompts, *p.counter_prompts):
                seen.setdefault(t, None)
        return list(seen)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        field = ".".join(str(x) for x in err["loc"]) or "(policy)"
        parts.append(f"field '{field}': {err['msg']}")
    return "; ".join(parts)


def parse_policy(data: Any, source: str) -> Policy:
    """Validate one policy mapping; ``source`` names where it came from in errors."""
    name = data.get("name", "?") if isinstance(data, dict) else "?"
    if not isinstance(data, dict):
        raise PolicyError(f"{source}: expected a mapping with name, prompts, threshold...")
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(f"{source}: policy '{name}': {_describe(exc)}") from exc


def build_set(policies: Iterable[tuple[Policy, str]]) -> PolicySet:
    seen: dict[str, str] = {}
    out = []
    for policy, source in policies:
        if policy.name in seen:
            raise PolicyError(f"{source}: policy '{policy.name}': field 'name': "
                              f"already defined in {seen[policy.name]}")
        seen[policy.name] = source
        out.append(policy)
    if not out:
        raise PolicyError("no policies found")
    return PolicySet(policies=tuple(out))



def parse_set(items: Any, source: str = "draft") -> PolicySet:
    """A policy set from a list of policy mappings (the console's drafts), validated exactly
    as policy files are; errors name ``source[i]``, the policy and the field."""
    if not isinstance(items, list):
        raise PolicyError(f"{source}: expected a list of policies")
    return build_set((parse_policy(item, f"{source}[{i}]"), f"{source}[{i}]")
                     for i, item in enumerate(items))
