"""Emoji art styles from npm for training the demo model: fetch, rasterise, look up.

Each style is a pinned npm tarball of glyphs named by code points (SVG, or WebP for
Fluent 3D), downloaded from the npm registry (the file ``npm pack`` fetches;
``NPM_CONFIG_REGISTRY`` points at a mirror) and checked against its SHA-1. ``rsvg-convert``
(or Pillow, for raster art) draws the glyphs the catalogue needs into a PNG cache once;
after that a style is a directory of PNGs, read like EmojiOne's. Code-point file names
differ per package in case, zero padding (``00a9`` vs ``a9``) and whether U+FE0F is kept,
so every lookup key is unpadded lower-case hex without FE0F.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import subprocess
import tarfile
import urllib.request
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from moderation.contract.errors import BundleError

log = logging.getLogger(__name__)

RASTER = 128  # px; training and evaluation resize from here
# fetched tarballs and rasterised PNGs, shared by every checkout (like a model hub cache)
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache",
                     "moderation", "emoji-styles")


@dataclass(frozen=True)
class ArtStyle:
    name: str
    package: str
    version: str
    sha1: str  # of the npm tarball (``npm pack`` prints it as "shasum")
    glyph_dir: str  # inside the tarball: the folder of glyph files
    licence: str
    suffix: str = ".svg"  # or a raster format Pillow reads (".webp")

    @property
    def spec(self) -> str:
        return f"{self.package}@{self.version}"


STYLES: dict[str, ArtStyle] = {s.name: s for s in (
    ArtStyle("twemoji", "@twemoji/svg", "15.0.0",
             "0e3828c654726f1848fe11f31ef4e8a75854cc7f",
             "package", "Twitter/jdecked Twemoji, graphics CC-BY 4.0"),
    ArtStyle("openmoji", "openmoji", "17.0.0", "ee8094c5c0de0d2126b77ceb074d62b6fe2071d0",
             "package/color/svg", "OpenMoji, CC-BY-SA 4.0"),
    ArtStyle("openmoji-line", "openmoji", "17.0.0",
             "ee8094c5c0de0d2126b77ceb074d62b6fe2071d0",
             "package/black/svg", "OpenMoji (black line art), CC-BY-SA 4.0"),
    ArtStyle("fluent", "@lobehub/fluent-emoji-flat", "1.1.0",
             "3870fe52a29fd507668acdb89ff31a170d09c257",
             "package/assets", "Microsoft Fluent Emoji (flat), MIT"),
    ArtStyle("fluent-3d", "@lobehub/fluent-emoji-3d", "1.1.0",
             "ff0679b2bbbf6100dd9709d8952498f08f364ac6",
             "package/assets", "Microsoft Fluent Emoji (3D), MIT", suffix=".webp"),
)}


def key(seq: str) -> str:
    """The lookup key of an emoji sequence: lower-case hex code points without FE0F."""
    return "-".join(f"{ord(c):x}" for c in seq if c != "\ufe0f")


def file_key(stem: str) -> str:
    """The lookup key of a glyph file name such as ``0023-FE0F-20E3`` (-> ``23-20e3``)."""
    return "-".join(f"{int(p, 16):x}" for p in stem.split("-") if p.lower() != "fe0f")


def _tarball(style: ArtStyle, cache: Path) -> Path:
    """The style's npm tarball, downloaded once (what ``npm pack`` fetches) and checked."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = style.package.lstrip("@").replace("/", "-")
    path = cache / f"{stem}-{style.version}.tgz"
    if not path.exists():
        registry = os.environ.get("NPM_CONFIG_REGISTRY", "https://registry.npmjs.org/")
        base = style.package.rpartition("/")[2]
        url = f"{registry.rstrip('/')}/{style.package}/-/{base}-{style.version}.tgz"
        log.info("fetching package=%s url=%s", style.spec, url)
        try:
            with urllib.request.urlopen(url, timeout=120) as resp:
                data = resp.read()
        except OSError as exc:
            raise BundleError(f"cannot fetch {style.spec} from {url}: {exc}") from exc
        _check(style, data, url)  # before it lands in the cache
        path.with_suffix(".part").write_bytes(data)
        path.with_suffix(".part").replace(path)
    else:
        _check(style, path.read_bytes(), str(path))
    return path


def _check(style: ArtStyle, data: bytes, where: str) -> None:
    digest = hashlib.sha1(data).hexdigest()
    if digest != style.sha1:
        raise BundleError(f"{where}: sha1 {digest}, expected {style.sha1} ({style.spec})")


def _rasterise(data: bytes, out: Path, svg: bool) -> None:
    tmp = out.with_suffix(".tmp")
    if svg:
        subprocess.run(["rsvg-convert", "-w", str(RASTER), "-h", str(RASTER), "-a", "-f",
                        "png", "-o", str(tmp)], input=data, check=True)
    else:
        img = Image.open(io.BytesIO(data)).convert("RGBA")
        img.thumbnail((RASTER, RASTER), Image.Resampling.LANCZOS)
        img.save(tmp, "PNG")
    tmp.replace(out)


def prepare(style: ArtStyle, wanted: Iterable[str], cache: Path = DEFAULT_CACHE,
            workers: int = 4) -> Path:
    """Rasterise the glyphs of ``wanted`` sequences the style has; the PNG directory.

    Incremental: a later call that wants more glyphs (a full run after a smoke test)
    rasterises only those; ``index.txt`` lists every glyph the tarball has, so a call with
    nothing new to draw does not open the tarball."""
    out = cache / f"{style.name}-{style.version}-{RASTER}"
    index = out / "index.txt"
    want = {key(s) for s in wanted}
    if index.exists():
        # keys as this version writes them (older caches padded some code points)
        have = {file_key(k) for k in index.read_text().split()} & want
        if all((out / f"{k}.png").exists() for k in have):
            return out
    if style.suffix == ".svg" and shutil.which("rsvg-convert") is None:
        raise BundleError("rsvg-convert not found (it rasterises SVG): "
                          "apt-get install librsvg2-bin")
    out.mkdir(parents=True, exist_ok=True)
    keys: list[str] = []
    jobs: list[tuple[bytes, Path]] = []
    queued: set[Path] = set()
    with tarfile.open(_tarball(style, cache)) as tar:
        for member in tar:
            folder, _, name = member.name.rpartition("/")
            if folder != style.glyph_dir or not name.endswith(style.suffix):
                continue
            k = file_key(name[:-len(style.suffix)])
            keys.append(k)
            target = out / f"{k}.png"
            # two file names can share a key (with and without FE0F): draw one of them
            if k in want and not target.exists() and target not in queued:
                f = tar.extractfile(member)
                assert f is not None
                jobs.append((f.read(), target))
                queued.add(target)
    with ThreadPoolExecutor(workers) as pool:
        svg = style.suffix == ".svg"
        list(pool.map(lambda job: _rasterise(job[0], job[1], svg), jobs))
    index.write_text("\n".join(sorted(keys)) + "\n")  # last: a crash leaves no index
    log.info("rasterised style=%s glyphs=%d", style.name, len(jobs))
    return out


class PngDirRenderer:
    """Glyphs from a directory of PNGs (or WebPs: a training pack's) named by code points
    (any case, FE0F or not)."""

    def __init__(self, png_dir: Path) -> None:
        self._files = {file_key(p.stem): p for ext in ("png", "webp")
                       for p in png_dir.glob(f"*.{ext}")}
        self._cache: dict[str, Image.Image | None] = {}

    def __len__(self) -> int:
        return len(self._files)

    def glyph(self, seq: str) -> Image.Image | None:
        if seq not in self._cache:
            path = self._files.get(key(seq))
            img = Image.open(path).convert("RGBA") if path else None
            if img is not None:
                bbox = img.getbbox()
                img = img.crop(bbox) if bbox else None
            self._cache[seq] = img
        return self._cache[seq]


def renderers(names: Iterable[str], wanted: Iterable[str],
              cache: Path = DEFAULT_CACHE) -> dict[str, PngDirRenderer]:
    """Fetched, rasterised and opened renderers for the named styles."""
    seqs = list(wanted)
    return {n: PngDirRenderer(prepare(STYLES[n], seqs, cache)) for n in names}
