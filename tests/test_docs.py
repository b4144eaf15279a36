"""The README documents every setting and every metric that exists."""

from pathlib import Path

from prometheus_client import CollectorRegistry

from moderation.config import Settings
from moderation.edges.metrics import Metrics

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def test_every_setting_is_in_the_configuration_table() -> None:
    for section, field in Settings.model_fields.items():
        assert field.annotation is not None
        for name in field.annotation.model_fields:
            assert f"| `MODERATION_{section.upper()}__{name.upper()}` |" in README


def test_every_metric_is_in_the_metric_table() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    for family in registry.collect():
        name = family.name + ("_total" if family.type == "counter" else "")
        assert f"| `{name}` |" in README, name
