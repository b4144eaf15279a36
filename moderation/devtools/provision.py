"""Getting an (embedded or test) stack ready for a worker: its topics and a policy set."""

from __future__ import annotations

from pathlib import Path

from moderation.config import Settings
from moderation.edges.encoders import TritonEncoder
from moderation.edges.kafka_io import ensure_topics
from moderation.edges.policy_files import load_policy_dir
from moderation.edges.policy_store import RedisPolicyStore, apply_policies


def create_topics(settings: Settings) -> None:
    """The input, decision, dead-letter and review topics, where missing."""
    k = settings.kafka
    ensure_topics(k, [k.input_topic, k.decision_topic, k.dead_letter_topic, k.review_topic])


def provision(settings: Settings, policies_dir: Path) -> int:
    """Create the topics where missing, and apply ``policies_dir`` through Triton's
    text encoder; returns the new policy version."""
    create_topics(settings)
    return apply_policies(load_policy_dir(policies_dir),
                          TritonEncoder.from_settings(settings.triton),
                          RedisPolicyStore.from_settings(settings.redis))
