"""npm emoji art styles: tarball check, rasterising only what is wanted, lookups by key."""

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from moderation.contract.errors import BundleError
from moderation.models.training import emoji_styles as es

SVG = (b'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 36 36">'
       b'<rect x="9" y="4" width="18" height="28" fill="#d22"/></svg>')


def _style(tmp_path: Path, names: list[str], sha1: str | None = None,
           glyph: bytes = SVG, suffix: str = ".svg") -> es.ArtStyle:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(f"package/svg/{name}")
            info.size = len(glyph)
            tar.addfile(info, io.BytesIO(glyph))
    data = buf.getvalue()
    (tmp_path / "fake-1.0.0.tgz").write_bytes(data)  # already "downloaded"
    digest = sha1 or hashlib.sha1(data).hexdigest()
    return es.ArtStyle("fake", "fake", "1.0.0", digest, "package/svg", "test", suffix)


def test_keys_ignore_case_and_fe0f() -> None:
    assert es.key("\u2620\ufe0f") == "2620" == es.file_key("2620-FE0F")
    assert es.key("🏃🏻‍♀️") == es.file_key("1F3C3-1F3FB-200D-2640-FE0F")
    assert es.file_key("1f52a") == es.key("🔪")


def test_keys_ignore_zero_padding() -> None:
    # OpenMoji and Fluent pad to four digits; the catalogue's code points are unpadded
    assert es.file_key("0023-FE0F-20E3") == es.key("#\ufe0f\u20e3") == "23-20e3"
    assert es.file_key("00A9") == es.key("\u00a9") == "a9"


def test_prepare_rasterises_only_wanted_glyphs(tmp_path: Path) -> None:
    style = _style(tmp_path, ["1F52A.svg", "2620-fe0f.svg", "1f415.svg", "README.md"])
    out = es.prepare(style, ["🔪", "☠\ufe0f"], cache=tmp_path)
    assert sorted(p.name for p in out.glob("*.png")) == ["1f52a.png", "2620.png"]
    renderer = es.PngDirRenderer(out)
    knife = renderer.glyph("🔪")
    assert knife is not None and knife.mode == "RGBA"
    assert knife.size == (64, 100)  # the tight crop of an 18x28 rectangle at 128 px
    assert renderer.glyph("☠") is not None and renderer.glyph("🐕") is None
    assert Image.open(out / "2620.png").size == (es.RASTER, es.RASTER)
    # a call with nothing new to draw does not touch the tarball
    tarball = tmp_path / "fake-1.0.0.tgz"
    tarball.rename(tmp_path / "away.tgz")
    assert es.prepare(style, ["🔪", "🎰"], cache=tmp_path) == out  # 🎰: not in the style
    # one that wants more (a full run after a smoke test) draws only what is new
    tarball.write_bytes((tmp_path / "away.tgz").read_bytes())
    before = (out / "1f52a.png").stat().st_mtime_ns
    es.prepare(style, ["🔪", "🐕"], cache=tmp_path)
    assert (out / "1f415.png").exists()
    assert (out / "1f52a.png").stat().st_mtime_ns == before


def test_raster_art_is_drawn_with_pillow_once_per_key(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGBA", (256, 200), (200, 20, 20, 255)).save(buf, "WEBP")
    # Fluent 3D names some glyphs both with and without FE0F
    style = _style(tmp_path, ["00a9-fe0f.webp", "00a9.webp", "1f52a.webp", "1f52a.svg"],
                   glyph=buf.getvalue(), suffix=".webp")
    out = es.prepare(style, ["\u00a9", "🔪"], cache=tmp_path)
    assert sorted(p.name for p in out.glob("*")) == ["1f52a.png", "a9.png", "index.txt"]
    assert Image.open(out / "a9.png").size == (es.RASTER, 100)  # fitted, aspect kept
    assert es.PngDirRenderer(out).glyph("\u00a9\ufe0f") is not None


def test_a_tampered_tarball_is_refused(tmp_path: Path) -> None:
    style = _style(tmp_path, ["1f52a.svg"], sha1="0" * 40)
    with pytest.raises(BundleError, match="sha1"):
        es.prepare(style, ["🔪"], cache=tmp_path)


def test_pinned_styles_name_their_licences() -> None:
    assert {"twemoji", "openmoji", "openmoji-line", "fluent", "fluent-3d"} <= set(es.STYLES)
    for style in es.STYLES.values():
        assert len(style.sha1) == 40 and style.licence
