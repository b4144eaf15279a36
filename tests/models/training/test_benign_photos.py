"""The benign-photo check reads the photographs bundled in three packages and counts flags."""

from collections.abc import Sequence

import numpy as np

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
