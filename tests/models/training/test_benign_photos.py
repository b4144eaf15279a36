"""The benign-photo check reads the photographs bundled in three packages and counts flags."""

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from moderation.contract.errors import ConfigError, ImageError
from moderation.core.policy import Policy, PolicySet
from moderation.models.training import benign_photos


def test_finds_the_bundled_photographs() -> None:
    found = benign_photos.photo_paths()
    packages = {package for package, _ in found}
    assert packages == {"skimage", "sklearn", "matplotlib"}
    names = {path.name for _, path in found}
    assert {"flower.jpg", "china.jpg", "astronaut.png", "grace_hopper.jpg"} <= names
    assert len(found) >= 30


class BrightnessEncoder:
    """A toy encoder: bright images point one way, dark ones the other."""

    model_name = "toy"

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        from io import BytesIO

        from PIL import Image

        means = [np.asarray(Image.open(BytesIO(b)).convert("L")).mean() / 255 for b in images]
        v = np.array([[m, 1 - m] for m in means], np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([[1.0, 0.0] if t == "bright" else [0.0, 1.0] for t in texts], np.float32)


def test_check_reports_flags_and_the_closest_policy() -> None:
    policies = PolicySet(policies=(Policy(name="bright", threshold=0.9, prompts=("bright",)),))
    results = benign_photos.check(BrightnessEncoder(), policies)
    assert len(results) == len(benign_photos.photo_paths())
    flagged = [r for r in results if r.flagged]
    assert flagged and len(flagged) < len(results)  # some photos are bright, some are not
    assert all(r.top_policy == "bright" and r.top_threshold == 0.9 for r in results)
    assert all((r.top_score >= 0.9) == bool(r.flagged) for r in results)
    report = benign_photos.format_report(results)
    assert f"{len(flagged)} of {len(results)} flagged" in report


class DecodingBrightnessEncoder(BrightnessEncoder):
    """As the real encoders do, bad bytes raise ImageError."""

    def embed_images(self, images: Sequence[bytes]) -> np.ndarray:
        from io import BytesIO

        from PIL import Image, UnidentifiedImageError

        for b in images:
            try:
                Image.open(BytesIO(b)).load()
            except (UnidentifiedImageError, OSError) as e:
                raise ImageError("decode_failed", str(e)) from e
        return super().embed_images(images)


def _write(path: Path, grey: int, fmt: str) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (32, 32), (grey, grey, grey)).save(path, fmt)


def test_a_folder_check_scores_every_image_and_counts_the_unreadable(tmp_path: Path) -> None:
    _write(tmp_path / "a" / "bright.png", 250, "PNG")
    _write(tmp_path / "b" / "dark.JPG", 10, "JPEG")
    (tmp_path / "broken.png").write_bytes(b"not an image")
    (tmp_path / "notes.txt").write_text("ignored: not an image suffix")
    paths = benign_photos.folder_paths(tmp_path)
    assert [name for _, name in ((g, p.name) for g, p in paths)] == \
        ["bright.png", "dark.JPG", "broken.png"]
    policies = PolicySet(policies=(Policy(name="bright", threshold=0.9, prompts=("bright",)),))
    results = {r.name: r for r in benign_photos.check(DecodingBrightnessEncoder(), policies,
                                                       paths)}
    assert set(results) == {"a/bright.png", "b/dark.JPG", "broken.png"}
    assert results["a/bright.png"].flagged == ("bright",)
    assert results["b/dark.JPG"].flagged == () and not results["b/dark.JPG"].error
    assert results["broken.png"].error and results["broken.png"].flagged == ()
    report = benign_photos.format_report(list(results.values()), "folder", every_image=False)
    assert "folder: 1 of 3 flagged, 1 unreadable" in report
    assert "bright: 1" in report and "a/bright.png" in report and "broken.png" in report
    assert "dark.JPG" not in report  # a large folder lists only what needs a look


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        benign_photos.folder_paths(tmp_path / "nope")


def test_eval_reports_a_benign_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from moderation.cli.main import main

    _write(tmp_path / "grey.png", 128, "PNG")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    monkeypatch.setattr(benign_photos, "photo_paths", list)  # the folder alone, fast
    assert main(["models", "eval", "--split", "photos", "--benign-dir", str(tmp_path),
                 "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    folder = report["benign_dirs"][str(tmp_path)]
    assert folder["total"] == 2 and folder["unreadable"] == 1
    assert [r["name"] for r in folder["results"] if r["error"]] == ["broken.jpg"]
