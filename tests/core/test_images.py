import io

import numpy as np
import pytest
from PIL import Image

from moderation.contract.errors import ImageError
from moderation.core.images import DecodeLimits, Preprocess, decode_image, preprocess


def encode(img: Image.Image, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1"])
def test_every_mode_decodes_to_rgb(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    img = Image.new(mode, (20, 10))
    out = decode_image(encode(img, fmt))
    assert out.mode == "RGB" and out.size == (20, 10)


def test_transparent_pixels_become_white() -> None:
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    assert decode_image(encode(img)).getpixel((0, 0)) == (255, 255, 255)


def test_exif_orientation_is_applied() -> None:
    img = Image.new("RGB", (30, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    out = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (10, 30)


@pytest.mark.parametrize("data,limits,reason", [
    (b"", DecodeLimits(), "empty_image"),
    (b"x" * 101, DecodeLimits(max_bytes=100), "image_too_large"),
    (b"<svg xmlns='http://www.w3.org/2000/svg'/>", DecodeLimits(), "undecodable_image"),
])
def test_rejections(data: bytes, limits: DecodeLimits, reason: str) -> None:
    with pytest.raises(ImageError) as exc:
        decode_image(data, limits)
    assert exc.value.reason == reason


def test_pixel_limit_checked_before_decoding() -> None:
    data = encode(Image.new("L", (2000, 2000)))
    with pytest.raises(ImageError) as exc:
        decode_image(data, DecodeLimits(max_pixels=1_000_000))
    assert exc.value.reason == "too_many_pixels"


def test_truncated_image_is_corrupt() -> None:
    data = encode(Image.effect_noise((64, 64), 50).convert("RGB"), "JPEG")
    with pytest.raises(ImageError) as exc:
        decode_image(data[: len(data) // 2])
    assert exc.value.reason in ("corrupt_image", "undecodable_image")


def test_frame_limit() -> None:
    frames = [Image.new("RGB", (8, 8), (i * 40, 0, 0)) for i in range(5)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageError) as exc:
        decode_image(buf.getvalue(), DecodeLimits(max_frames=4))
    assert exc.value.reason == "too_many_frames"


def test_preprocess_resizes_shorter_side_and_center_crops() -> None:
    img = Image.new("RGB", (200, 100), (255, 255, 255))
    img.paste((0, 0, 0), (0, 0, 30, 100))  # a black band outside the centre crop
    spec = Preprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    x = preprocess(img, spec)
    assert x.shape == (3, 32, 32) and x.dtype == np.float32
    np.testing.assert_allclose(x, 1.0, atol=1e-6)  # all white -> (1 - 0.5) / 0.5
