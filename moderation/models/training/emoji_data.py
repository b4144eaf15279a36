"""Emoji catalogue and synthetic scene rendering for the embedded demo model.

Glyphs come from Debian's ``fonts-noto-color-emoji`` and the npm art styles in
``emoji_styles`` (training and held-out evaluation), and ``ruby-gemojione`` (EmojiOne, a
style kept for evaluation only). Captions come from the CLDR
annotations in ``unicode-cldr-core``: the TTS name plus the keyword list.
"""

from __future__ import annotations

import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from moderation.contract.errors import BundleError
from moderation.models.training.emoji_styles import PngDirRenderer

NOTO_FONT = Path("/usr/share/fonts/truetype/noto/NotoColorEmoji.ttf")
CLDR_DIR = Path("/usr/share/unicode/cldr/common")
GEMOJIONE_GLOB = "/usr/share/rubygems-integration/all/gems/gemojione-*/assets/png"

SKIN_TONES = ("\U0001f3fb", "\U0001f3fc", "\U0001f3fd", "\U0001f3fe", "\U0001f3ff")
VS16 = "\ufe0f"
# CLDR annotates these, but they are components or plain-text symbols, not pictures.
_EXCLUDED = set(SKIN_TONES) | {"\U0001f9b0", "\U0001f9b1", "\U0001f9b2", "\U0001f9b3"}
NOTO_SIZE = 109  # the one bitmap strike the CBDT font has


@dataclass(frozen=True)
class Emoji:
    """One emoji class: its base sequence, skin-tone variants and CLDR text."""

    char: str
    name: str
    keywords: tuple[str, ...]
    variants: tuple[str, ...] = field(default=())

    @property
    def captions(self) -> tuple[str, ...]:
        """Caption variants whose mean text embedding is the class prototype."""
        kw = ", ".join(k for k in self.keywords if k != self.name)
        return (self.name, f"{self.name}, {kw}" if kw else self.name, f"an emoji of {self.name}")


def _strip_vs(s: str) -> str:
    return s.replace(VS16, "")


def load_catalogue(cldr_dir: Path = CLDR_DIR) -> list[Emoji]:
    """Every CLDR-annotated emoji (English), with skin-tone variants grouped in one class."""
    base = cldr_dir / "annotations" / "en.xml"
    derived = cldr_dir / "annotationsDerived" / "en.xml"
    if not base.exists():
        raise BundleError(
            f"CLDR annotations not found at {base}: apt-get install unicode-cldr-core")
    names: dict[str, str] = {}
    keywords: dict[str, tuple[str, ...]] = {}
    for ann in ET.parse(base).getroot().iter("annotation"):
        cp = _strip_vs(ann.get("cp", ""))
        text = (ann.text or "").strip()
        if ann.get("type") == "tts":
            names[cp] = text
        else:
            keywords[cp] = tuple(k.strip() for k in text.split("|") if k.strip())
    derived_cps = set()
    if derived.exists():
        for ann in ET.parse(derived).getroot().iter("annotation"):
            derived_cps.add(_strip_vs(ann.get("cp", "")))
    out = []
    for cp, name in sorted(names.items()):
        if cp in _EXCLUDED or not cp or re.fullmatch(r"[\x00-\x7f]+", cp):
            continue
        variants = tuple(cp + tone for tone in SKIN_TONES if cp + tone in derived_cps)
        out.append(Emoji(cp, name, keywords.get(cp, ()), variants))
    return out


class GlyphSource(Protocol):
    """Anything that draws an emoji sequence as a tight RGBA crop (None: not in this style)."""

    def glyph(self, seq: str) -> Image.Image | None: ...


class NotoRenderer:
    """Renders emoji with Noto Color Emoji into tight RGBA crops (cached per sequence)."""

    def __init__(self, font_path: Path = NOTO_FONT) -> None:
        if not font_path.exists():
            raise BundleError(f"{font_path} not found: apt-get install fonts-noto-color-emoji")
        self._font = ImageFont.truetype(str(font_path), NOTO_SIZE)
        self._cache: dict[str, Image.Image | None] = {}
        self._tofu = self._draw("\U000e0000")

    def _draw(self, seq: str) -> Image.Image | None:
        canvas = Image.new("RGBA", (NOTO_SIZE * 3, NOTO_SIZE * 2), (0, 0, 0, 0))
        ImageDraw.Draw(canvas).text((4, 4), seq, font=self._font, embedded_color=True)
        bbox = canvas.getbbox()
        if bbox is None:
            return None
        return canvas.crop(bbox)

    def glyph(self, seq: str) -> Image.Image | None:
        """The rendered glyph, or None when the font has no single picture for it."""
        if seq not in self._cache:
            img = self._draw(seq)
            # Unsupported sequences fall apart into several glyphs (wider than one) or tofu.
            if img is not None and (img.width > NOTO_SIZE * 1.4 or self._same_as_tofu(img)):
                img = None
            self._cache[seq] = img
        return self._cache[seq]

    def _same_as_tofu(self, img: Image.Image) -> bool:
        t = self._tofu
        return t is not None and t.size == img.size and t.tobytes() == img.tobytes()


def gemojione_renderer(png_dir: Path | None = None) -> GlyphSource:
    """EmojiOne 3 art (PNG files named by code points): a style never used in training."""
    if png_dir is None:
        found = sorted(Path("/").glob(GEMOJIONE_GLOB.lstrip("/")))
        if not found:
            raise BundleError("gemojione PNGs not found: apt-get install ruby-gemojione")
        png_dir = found[-1]
    return PngDirRenderer(png_dir)


def renderable(catalogue: list[Emoji], renderer: NotoRenderer) -> list[Emoji]:
    """Keep classes with a base glyph; keep only the variants that also render."""
    out = []
    for e in catalogue:
        if renderer.glyph(e.char) is None:
            continue
        variants = tuple(v for v in e.variants if renderer.glyph(v) is not None)
        out.append(Emoji(e.char, e.name, e.keywords, variants))
    return out


# --- scene composition -----------------------------------------------------------------


def _background(rng: np.random.Generator, size: int) -> Image.Image:
    kind = rng.integers(0, 7)
    if kind == 0:  # solid colour
        arr = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (size, size, 3))
    elif kind == 1:  # linear gradient
        a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
        t = np.linspace(0, 1, size, dtype=np.float32)[:, None, None]
        arr = (a * (1 - t) + b * t).repeat(size, axis=1).astype(np.uint8)
        if rng.random() < 0.5:
            arr = arr.transpose(1, 0, 2)
    elif kind == 2:  # smooth "photo-like" blotches
        low = rng.integers(0, 256, (int(rng.integers(2, 6)),) * 2 + (3,), dtype=np.uint8)
        return Image.fromarray(low).resize((size, size), Image.Resampling.BICUBIC)
    elif kind == 3:  # noise texture
        base = rng.integers(0, 256, 3).astype(np.int16)
        noise = rng.integers(-60, 61, (size, size, 3)).astype(np.int16)
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        img = Image.fromarray(arr)
        return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 1.5))))
    elif kind == 5:  # paper: off-white with grain and faint ruled lines
        tint = rng.integers(215, 256, 3).astype(np.int16)
        grain = rng.normal(0, rng.uniform(2, 10), (size, size, 1)).astype(np.int16)
        arr = np.clip(tint + grain, 0, 255).astype(np.uint8)
        if rng.random() < 0.5:
            step = int(rng.integers(8, 24))
            arr[step // 2::step] = (arr[step // 2::step] * 0.85).astype(np.uint8)
    elif kind == 6:  # photo-like: 1/f noise has a natural image's spectrum
        return photo_like(rng, size)
    else:  # clutter: random rectangles and ellipses
        img = Image.new("RGB", (size, size), tuple(int(x) for x in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(img)
        for _ in range(int(rng.integers(2, 8))):
            x0, y0 = rng.integers(-size // 4, size, 2)
            w, h = rng.integers(size // 8, size // 2, 2)
            colour = tuple(int(x) for x in rng.integers(0, 256, 3))
            box = (int(x0), int(y0), int(x0 + w), int(y0 + h))
            (draw.rectangle if rng.random() < 0.5 else draw.ellipse)(box, fill=colour)
        return img
    return Image.fromarray(np.ascontiguousarray(arr))


def photo_like(rng: np.random.Generator, size: int) -> Image.Image:
    """A colour 1/f-noise image: smooth regions and texture at every scale, like a photo."""
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    radius = np.sqrt(fx * fx + fy * fy)
    radius[0, 0] = 1.0
    falloff = radius ** -float(rng.uniform(1.6, 2.4))
    chans = []
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi, falloff.shape)
        chans.append(np.fft.irfft2(falloff * np.exp(1j * phase), s=(size, size)))
    # mostly shared luminance with a little per-channel colour, as in real photographs
    noise = np.stack(chans, -1)
    noise = noise[..., :1] + rng.uniform(0.1, 0.5) * noise
    noise = (noise - noise.mean()) / (noise.std() + 1e-8)
    if rng.random() < 0.5:
        return Image.fromarray(_tone(rng, noise))
    # dead leaves: occluding shapes at power-law sizes give photos' edges and flat regions
    img = Image.fromarray(_tone(rng, noise * 0.3))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(20, 80))):
        r = size * float(rng.pareto(1.5) * 0.04 + 0.02)
        cx, cy = rng.uniform(0, size, 2)
        grey = float(rng.uniform(20, 235))
        colour = tuple(int(np.clip(grey + d, 0, 255)) for d in rng.normal(0, 25, 3))
        box = (cx - r, cy - r * rng.uniform(0.5, 1.5), cx + r, cy + r * rng.uniform(0.5, 1.5))
        (draw.ellipse if rng.random() < 0.6 else draw.rectangle)(box, fill=colour)
    return img.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.5))))


def _tone(rng: np.random.Generator, noise: NDArray[Any]) -> NDArray[np.uint8]:
    arr = noise * rng.uniform(30, 60) + rng.uniform(70, 180) + rng.normal(0, 15, 3)
    return np.clip(arr, 0, 255).astype(np.uint8)


def fit(glyph: Image.Image, side: int) -> Image.Image:
    """The glyph scaled so its longer edge is ``side``, keeping its aspect ratio."""
    scale = side / max(glyph.size)
    size = (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale)))
    return glyph.resize(size, Image.Resampling.LANCZOS)


_SCALES = {1: (0.35, 0.9), 2: (0.28, 0.6), 3: (0.22, 0.5)}


def compose(
    rng: np.random.Generator,
    glyphs: list[Image.Image],
    canvas: int,
    rotate_deg: float = 25.0,
) -> Image.Image:
    """Paste glyphs on a random background at random scales, rotations and positions.

    Glyphs may be cut by the border (random crops) but keep most of their area visible.
    """
    img = _background(rng, canvas)
    if not glyphs:
        return img
    lo, hi = _SCALES[min(len(glyphs), 3)]
    placed: list[tuple[float, float, float]] = []
    for glyph in glyphs:
        side = max(8, int(canvas * rng.uniform(lo, hi)))
        g = fit(glyph, side)
        if rotate_deg and rng.random() < 0.5:
            g = g.rotate(float(rng.uniform(-rotate_deg, rotate_deg)), Image.Resampling.BILINEAR,
                         expand=True)
        x = y = 0.0
        for _ in range(12):  # rejection sampling: avoid hiding one glyph under another
            x = rng.uniform(-0.15 * g.width, canvas - 0.85 * g.width)
            y = rng.uniform(-0.15 * g.height, canvas - 0.85 * g.height)
            cx, cy = x + g.width / 2, y + g.height / 2
            if all(np.hypot(cx - px, cy - py) > 0.55 * (ps + side) / 2 for px, py, ps in placed):
                break
        placed.append((x + g.width / 2, y + g.height / 2, side))
        img.paste(g, (int(x), int(y)), g)
    return img


def sample_count(rng: np.random.Generator) -> int:
    return int(rng.choice([1, 2, 3], p=[0.5, 0.3, 0.2]))


def encode_image(img: Image.Image, fmt: str, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, quality=quality) if fmt == "JPEG" else img.save(buf, format=fmt)
    return buf.getvalue()
