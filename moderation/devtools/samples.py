"""The demo's sample uploads: rendered emoji scenes, flaggable and benign, as PNG/JPEG."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from moderation.models.training import emoji_data as ed

# (file stem, emoji shown): one or more per policy, and benign scenes incl. look-alikes
SAMPLES: tuple[tuple[str, str], ...] = (
    ("kitchen_knife", "🔪"), ("pistol", "🔫"), ("crossed_swords", "⚔"), ("bomb", "💣"),
    ("dagger_and_cat", "🗡🐈"),
    ("cigarette", "🚬"), ("pills", "💊"), ("syringe", "💉"),
    ("beer", "🍺"), ("wine_glass", "🍷"), ("cocktail_and_palm", "🍸🌴"), ("champagne", "🍾"),
    ("slot_machine", "🎰"), ("dice", "🎲"), ("joker_card", "🃏"),
    ("middle_finger", "🖕"),
    ("skull", "💀"), ("coffin", "⚰"), ("drop_of_blood", "🩸"),
    ("bikini", "👙"), ("briefs", "🩲"),
    ("dog", "🐕"), ("cat_face", "🐱"), ("sunflower", "🌻"), ("pizza", "🍕"),
    ("bicycle", "🚲"), ("house", "🏠"), ("soccer_ball", "⚽"), ("rainbow", "🌈"),
    ("birthday_cake", "🎂"), ("smiling_face", "😀"), ("tree_and_sun", "🌳☀"),
    ("fork_and_knife", "🍴"), ("hot_coffee", "☕"), ("cup_with_straw", "🥤"),
    ("thumbs_up", "👍"), ("t_shirt", "👕"), ("video_game", "🎮"), ("ghost", "👻"),
)


def render_samples(out: Path, size: int = 320, seed: int = 7) -> list[Path]:
    """Write every sample (deterministic for a seed); every third one as JPEG."""
    out.mkdir(parents=True, exist_ok=True)
    renderer = ed.NotoRenderer()
    rng = np.random.default_rng(seed)
    paths = []
    for i, (stem, chars) in enumerate(SAMPLES):
        glyphs = [g for g in (renderer.glyph(c) for c in chars) if g is not None]
        img = ed.compose(rng, glyphs, size, rotate_deg=15.0)
        fmt, ext = ("JPEG", "jpg") if i % 3 == 2 else ("PNG", "png")
        path = out / f"{stem}.{ext}"
        path.write_bytes(ed.encode_image(img, fmt, quality=88))
        paths.append(path)
    return paths
