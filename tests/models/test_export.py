"""ONNX export equals torch under onnxruntime; the TensorRT path's commands and configs."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from moderation.models.bundle import load_bundle
from moderation.models.export import build_trt, export_onnx, trt_commands


def run_onnx(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(sess.run(["embedding"], feeds)[0])


def demo_at_one_size(tmp: Path) -> Path:
    """The demo bundle's weights with the multi-scale view off (the committed bundle has it
    on), so the export of a tower at its input's size alone stays tested too."""
    out = tmp / "one-size"
    shutil.copytree(load_bundle("demo").dir, out)
    manifest = json.loads((out / "manifest.json").read_text())
    del manifest["image"]["params"]["view_sizes"]
    manifest["image"]["preprocess"]["size"] = 112
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.mark.parametrize("which", ["demo", "one-size", "tiny"])
def test_onnx_matches_torch(which: str, tiny_hf_bundle: Path, tmp_path: Path) -> None:
    where: str | Path = "demo"
    if which == "one-size":
        where = demo_at_one_size(tmp_path)
    elif which == "tiny":
        where = tiny_hf_bundle
    bundle = load_bundle(where)
    paths = export_onnx(bundle, tmp_path / "onnx")
    rng = np.random.default_rng(1)
    size = bundle.preprocess_spec.size
    for batch in (1, 5):  # the batch axis is dynamic
        px = rng.normal(size=(batch, 3, size, size)).astype(np.float32)
        np.testing.assert_allclose(run_onnx(paths["image"], {"pixel_values": px}),
                                   bundle.embed_pixels(px), atol=1e-4)
    texts = ["a gun", "a much longer sentence about a dog in a park", "x"]
    ids, mask = bundle.tokenize(texts)
    np.testing.assert_allclose(run_onnx(paths["text"], {"input_ids": ids, "attention_mask": mask}),
                               bundle.embed_texts(texts), atol=1e-4)


def test_trt_commands_are_fp16_with_batch_profiles(tmp_path: Path) -> None:
    image, text = trt_commands(tmp_path / "onnx", tmp_path / "repo", 224, 77, max_batch=32)
    assert image[0] == "trtexec" and "--fp16" in image and "--fp16" in text
    assert f"--onnx={tmp_path / 'onnx' / 'image_encoder.onnx'}" in image
    assert f"--saveEngine={tmp_path / 'repo' / 'clip_image_encoder' / '1' / 'model.plan'}" in image
    assert "--minShapes=pixel_values:1x3x224x224" in image
    assert "--maxShapes=pixel_values:32x3x224x224" in image
    assert "--maxShapes=input_ids:32x77,attention_mask:32x77" in text


def test_gpu_repository_configs_are_valid_model_configs(tiny_hf_bundle: Path,
                                                        tmp_path: Path) -> None:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    bundle = load_bundle(tiny_hf_bundle)
    lines = build_trt(bundle, tmp_path / "onnx", tmp_path / "repo", max_batch=32, dry_run=True)
    assert len(lines) == 2 and all("trtexec" in line for line in lines)
    configs = {}
    for path in (tmp_path / "repo").glob("*/config.pbtxt"):
        cfg = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        configs[cfg.name] = cfg
        assert cfg.max_batch_size == 32
    assert configs["clip_image_encoder"].platform == "tensorrt_plan"
    assert configs["clip_text_encoder"].platform == "tensorrt_plan"
    assert list(configs["clip_image_encoder"].input[0].dims) == [3, 32, 32]
    assert list(configs["clip_image_encoder"].output[0].dims) == [16]
    # clients see the same interface as the CPU repository
    image = configs["clip_image"]
    assert image.platform == "ensemble"
    assert image.input[0].name == "IMAGE" and image.output[0].name == "EMBEDDING"
    assert [o.name for o in image.output] == ["EMBEDDING", "MODEL"]
    assert [s.model_name for s in image.ensemble_scheduling.step] == [
        "image_preprocess", "clip_image_encoder"]


def test_build_without_trtexec_says_why(tiny_hf_bundle: Path, tmp_path: Path) -> None:
    from moderation.contract.errors import BundleError

    with pytest.raises(BundleError, match="GPU"):
        build_trt(load_bundle(tiny_hf_bundle), tmp_path, tmp_path / "repo",
                  trtexec="trtexec-not-installed")
