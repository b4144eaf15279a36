"""Ground truth for the emoji evaluation: which emoji belong to which default policy.

This is the answer key the evaluation scores against; the policies themselves only hold
natural-language prompts. ``LOOKALIKES`` are benign emoji that resemble a policy's
content (cutlery next to knives, soft drinks next to alcohol...): the evaluation
oversamples them as hard negatives.
"""

from __future__ import annotations

POLICY_EMOJI: dict[str, tuple[str, ...]] = {
    "weapons": ("🔪", "🗡", "⚔", "🔫", "🏹", "💣", "🪓"),
    "drugs_tobacco": ("🚬", "💊", "💉"),
    "alcohol": ("🍺", "🍻", "🍷", "🍸", "🍹", "🥃", "🍾", "🍶", "🥂"),
    "gambling": ("🎰", "🎲", "🃏", "🎴"),
    "rude_gestures": ("🖕",),
    "disturbing": ("💀", "☠", "🩸", "⚰", "⚱"),
    "swimwear_underwear": ("👙", "🩲", "🩱"),
}

LOOKALIKES: tuple[str, ...] = (
    "🍴", "🍽", "🥄", "🔧", "🔨", "🪛", "✂", "🧃", "🥤", "☕", "🍼", "🥛", "🧋", "🍵",
    "🎮", "🧩", "🎯", "♟", "🩹", "🩺", "🌡", "👕", "👗", "🩳", "👒", "👍", "✌", "🤞",
    "👋", "☝", "🐶", "👻", "🎃", "🍅", "❤", "🦴", "🧸", "🎁", "🏺", "🪥",
)


def policies_of(chars: list[str] | tuple[str, ...]) -> set[str]:
    """The policies an image containing these emoji violates."""
    return {p for p, members in POLICY_EMOJI.items() if any(c in members for c in chars)}


def is_labelled(char: str) -> bool:
    return any(char in members for members in POLICY_EMOJI.values())
