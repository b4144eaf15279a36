"""Photo-like test uploads for the benchmark: 640x480 renders with smooth light, shapes,
blur and sensor noise, encoded as JPEG (and some PNG) at sizes typical of phone uploads
after resizing (about 40-120 KB), so decoding costs what real uploads cost."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def render(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    slope = rng.uniform(-0.25, 0.25, (2, 3))
    img = base + x[..., None] * slope[0] + y[..., None] * slope[1]
    canvas = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8), "RGB")
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(6, 16))):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rx, ry = rng.uniform(15, w / 3), rng.uniform(15, h / 3)
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=color)
    canvas = canvas.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 3.0))))
    noisy = np.asarray(canvas, np.float32) + rng.normal(0, 6, (h, w, 3))
    return Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")


def encoded_uploads(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct encoded uploads; every fifth is PNG, the rest JPEG quality 85."""
    out = []
    for i in range(n):
        buf = io.BytesIO()
        img = render(seed * 100_003 + i)
        if i % 5 == 4:
            img.save(buf, "PNG", optimize=False, compress_level=6)
        else:
            img.save(buf, "JPEG", quality=85)
        out.append(buf.getvalue())
    return out


def jpeg_uploads(n: int, seed: int = 0, quality: int = 88) -> list[bytes]:
    """``n`` distinct 640x480 JPEGs of about 50 KB each (quality 88): the upload the
    worker's CPU budget is stated for."""
    out = []
    for i in range(n):
        buf = io.BytesIO()
        render(seed * 100_003 + i).save(buf, "JPEG", quality=quality)
        out.append(buf.getvalue())
    return out
