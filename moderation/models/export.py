"""ONNX export of a bundle's towers, and the TensorRT build for Triton on GPUs.

``export_onnx`` writes ``image_encoder.onnx`` (``pixel_values [B,3,S,S]`` -> ``embedding``)
and ``text_encoder.onnx`` (``input_ids``, ``attention_mask [B,L]`` -> ``embedding``), both
with a dynamic batch axis; the embeddings are already L2-normalised.

``trt_commands`` gives the ``trtexec`` lines that turn them into fp16 TensorRT plans whose
optimisation profiles span batch 1..max_batch_size, and ``write_gpu_repository`` lays out a
Triton repository where ``clip_image``/``clip_text`` keep the CPU repository's interface:
ensembles of a python pre-processing step and the ``tensorrt_plan`` encoder.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

from moderation.contract.errors import BundleError
from moderation.models.bundle import Bundle

ONNX_OPSET = 17


def export_onnx(bundle: Bundle, out: Path, opset: int = ONNX_OPSET) -> dict[str, Path]:
    import torch

    out.mkdir(parents=True, exist_ok=True)
    size = bundle.preprocess_spec.size
    image_path = out / "image_encoder.onnx"
    text_path = out / "text_encoder.onnx"
    with torch.inference_mode():
        torch.onnx.export(
            bundle.image_tower(), (torch.zeros(2, 3, size, size),), str(image_path),
            input_names=["pixel_values"], output_names=["embedding"],
            dynamic_axes={"pixel_values": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
        ids, mask = bundle.tokenize(["an example prompt", "another one"])
        torch.onnx.export(
            bundle.text_tower(), (torch.from_numpy(ids), torch.from_numpy(mask)),
            str(text_path),
            input_names=["input_ids", "attention_mask"], output_names=["embedding"],
            dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                          "attention_mask": {0: "batch", 1: "tokens"},
                          "embedding": {0: "batch"}},
            opset_version=opset, dynamo=False,
        )
    return {"image": image_path, "text": text_path}


def trt_commands(
    onnx_dir: Path, repository: Path, image_size: int, text_length: int, max_batch: int = 32,
    opt_batch: int = 16, trtexec: str = "trtexec",
) -> list[list[str]]:
    """trtexec invocations (fp16, one profile from batch 1 to ``max_batch``)."""
    image_plan = repository / "clip_image_encoder" / "1" / "model.plan"
    text_plan = repository / "clip_text_encoder" / "1" / "model.plan"
    img = f"3x{image_size}x{image_size}"
    txt = f"{text_length}"
    return [
        [trtexec, f"--onnx={onnx_dir / 'image_encoder.onnx'}", f"--saveEngine={image_plan}",
         "--fp16", f"--minShapes=pixel_values:1x{img}",
         f"--optShapes=pixel_values:{opt_batch}x{img}",
         f"--maxShapes=pixel_values:{max_batch}x{img}"],
        [trtexec, f"--onnx={onnx_dir / 'text_encoder.onnx'}", f"--saveEngine={text_plan}",
         "--fp16",
         f"--minShapes=input_ids:1x{txt},attention_mask:1x{txt}",
         f"--optShapes=input_ids:{opt_batch}x{txt},attention_mask:{opt_batch}x{txt}",
         f"--maxShapes=input_ids:{max_batch}x{txt},attention_mask:{max_batch}x{txt}"],
    ]


def _plan_config(name: str, inputs: list[tuple[str, str, list[int]]], dim: int,
                 max_batch: int) -> str:
    ins = ",\n".join(
        f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, d))} ] }}'
        for n, t, d in inputs)
    return (
        f'name: "{name}"\nplatform: "tensorrt_plan"\nmax_batch_size: {max_batch}\n'
        f"input [\n{ins}\n]\n"
        f'output [\n  {{ name: "embedding" data_type: TYPE_FP32 dims: [ {dim} ] }}\n]\n'
        "dynamic_batching {\n  preferred_batch_size: [ 8, 16, 32 ]\n"
        "  max_queue_delay_microseconds: 1000\n}\n"
        "instance_group [ { count: 1 kind: KIND_GPU } ]\n"
    )


def _python_config(name: str, inp: tuple[str, str, list[int]],
                   outs: list[tuple[str, str, list[int]]], max_batch: int, bundle: str,
                   kind: str = "KIND_CPU") -> str:
    o = ",\n".join(f'  {{ name: "{n}" data_type: {t} dims: [ {", ".join(map(str, d))} ] }}'
                   for n, t, d in outs)
    return (
        f'name: "{name}"\nbackend: "python"\nmax_batch_size: {max_batch}\n'
        f'input [\n  {{ name: "{inp[0]}" data_type: {inp[1]} dims: [ 1 ] }}\n]\n'
        f"output [\n{o}\n]\n"
        "dynamic_batching { max_queue_delay_microseconds: 1000 }\n"
        f"instance_group [ {{ count: 2 kind: {kind} }} ]\n"
        f'parameters: {{ key: "bundle" value: {{ string_value: "{bundle}" }} }}\n'
    )


def _ensemble_config(name: str, inp: tuple[str, str], dim: int, max_batch: int,
                     steps: list[tuple[str, dict[str, str], dict[str, str]]]) -> str:
    body = []
    for model, in_map, out_map in steps:
        ins = " ".join(f'input_map {{ key: "{k}" value: "{v}" }}' for k, v in in_map.items())
        outs = " ".join(f'output_map {{ key: "{k}" value: "{v}" }}' for k, v in out_map.items())
        body.append(f'    {{ model_name: "{model}" model_version: -1 {ins} {outs} }}')
    steps_txt = ",\n".join(body)
    return (
        f'name: "{name}"\nplatform: "ensemble"\nmax_batch_size: {max_batch}\n'
        f'input [ {{ name: "{inp[0]}" data_type: {inp[1]} dims: [ 1 ] }} ]\n'
        f'output [ {{ name: "EMBEDDING" data_type: TYPE_FP32 dims: [ {dim} ] }},\n'
        '  { name: "MODEL" data_type: TYPE_STRING dims: [ 1 ] } ]\n'
        f"ensemble_scheduling {{\n  step [\n{steps_txt}\n  ]\n}}\n"
    )


_PREPROCESS_PY = '''"""Decode + preprocess encoded images for the TensorRT image encoder: JPEGs with
nvJPEG on the GPU, the rest with Pillow, resized and normalised on the GPU (the same
moderation.serving.gpu_images as triton_models/gpu); pixels stay on the GPU (DLPack)."""
import json
import triton_python_backend_utils as pb_utils
from torch.utils import dlpack
from moderation.contract.errors import ImageError
from moderation.serving import gpu_images as gi
from moderation.serving import triton_backend as tb


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.bundle = tb.load_for_serving(config)
        options = gi.options_from(tb.params(config), tb.instance_device(args))
        self.images = gi.GpuImages(self.bundle, options, tower=False)
        self.limits = tb.limits_from_env()

    def execute(self, requests):
        out = []
        for r in requests:
            raw = pb_utils.get_input_tensor_by_name(r, "IMAGE").as_numpy().reshape(-1)
            decoded = self.images.decode([bytes(x) for x in raw], self.limits)
            error = next((d for d in decoded if isinstance(d, ImageError)), None)
            if error is not None:
                err = pb_utils.TritonError(f"{error.reason}: {error}")
                out.append(pb_utils.InferenceResponse(output_tensors=[], error=err))
                continue
            px = self.images.pixels(decoded).contiguous()
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor.from_dlpack("pixel_values", dlpack.to_dlpack(px)),
                pb_utils.Tensor("MODEL", tb.model_column(self.bundle, len(px)))]))
        return out
'''

_TOKENIZE_PY = '''"""Tokenise UTF-8 text for the TensorRT text encoder."""
import json
import triton_python_backend_utils as pb_utils
from moderation.serving import triton_backend as tb


class TritonPythonModel:
    def initialize(self, args):
        self.bundle = tb.load_for_serving(json.loads(args["model_config"]))

    def execute(self, requests):
        out = []
        for r in requests:
            raw = pb_utils.get_input_tensor_by_name(r, "TEXT").as_numpy().reshape(-1)
            ids, mask = self.bundle.tokenize([bytes(x).decode("utf-8", "replace") for x in raw])
            out.append(pb_utils.InferenceResponse([
                pb_utils.Tensor("input_ids", ids), pb_utils.Tensor("attention_mask", mask),
                pb_utils.Tensor("MODEL", tb.model_column(self.bundle, len(ids)))]))
        return out
'''


def write_gpu_repository(repository: Path, bundle: Bundle, max_batch: int = 32) -> None:
    """Configs (and python pre-processing models) of the GPU repository; plans come later."""
    m = bundle.manifest
    size, length, dim = m.image.preprocess.size, m.text.max_length, m.embedding_dim
    if not m.text.pad_to_max_length:
        raise BundleError("TensorRT profiles need a fixed text length (pad_to_max_length)")
    ref = str(bundle.dir)
    files = {
        "clip_image_encoder/config.pbtxt": _plan_config(
            "clip_image_encoder", [("pixel_values", "TYPE_FP32", [3, size, size])], dim,
            max_batch),
        "clip_text_encoder/config.pbtxt": _plan_config(
            "clip_text_encoder", [("input_ids", "TYPE_INT64", [length]),
                                  ("attention_mask", "TYPE_INT64", [length])], dim, max_batch),
        "image_preprocess/config.pbtxt": _python_config(
            "image_preprocess", ("IMAGE", "TYPE_STRING", [1]),
            [("pixel_values", "TYPE_FP32", [3, size, size]), ("MODEL", "TYPE_STRING", [1])],
            max_batch, ref, kind="KIND_GPU"),  # nvJPEG decoding: serving/gpu_images.py
        "image_preprocess/1/model.py": _PREPROCESS_PY,
        "text_tokenize/config.pbtxt": _python_config(
            "text_tokenize", ("TEXT", "TYPE_STRING", [1]),
            [("input_ids", "TYPE_INT64", [length]), ("attention_mask", "TYPE_INT64", [length]),
             ("MODEL", "TYPE_STRING", [1])], max_batch, ref),
        "text_tokenize/1/model.py": _TOKENIZE_PY,
        "clip_image/config.pbtxt": _ensemble_config(
            "clip_image", ("IMAGE", "TYPE_STRING"), dim, max_batch,
            [("image_preprocess", {"IMAGE": "IMAGE"},
              {"pixel_values": "pixels", "MODEL": "MODEL"}),
             ("clip_image_encoder", {"pixel_values": "pixels"}, {"embedding": "EMBEDDING"})]),
        "clip_text/config.pbtxt": _ensemble_config(
            "clip_text", ("TEXT", "TYPE_STRING"), dim, max_batch,
            [("text_tokenize", {"TEXT": "TEXT"},
              {"input_ids": "ids", "attention_mask": "mask", "MODEL": "MODEL"}),
             ("clip_text_encoder", {"input_ids": "ids", "attention_mask": "mask"},
              {"embedding": "EMBEDDING"})]),
    }
    for rel, text in files.items():
        path = repository / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for model in ("clip_image", "clip_text", "clip_image_encoder", "clip_text_encoder"):
        (repository / model / "1").mkdir(parents=True, exist_ok=True)


def build_trt(bundle: Bundle, onnx_dir: Path, repository: Path, max_batch: int = 32,
              dry_run: bool = False, trtexec: str = "trtexec") -> list[str]:
    """Write the GPU repository and build both plans (or only print the commands)."""
    write_gpu_repository(repository, bundle, max_batch)
    cmds = trt_commands(onnx_dir, repository, bundle.preprocess_spec.size,
                        bundle.manifest.text.max_length, max_batch, min(16, max_batch), trtexec)
    lines = [shlex.join(c) for c in cmds]
    if dry_run:
        return lines
    if shutil.which(trtexec) is None:
        raise BundleError(f"{trtexec} not found: TensorRT builds need a GPU machine with "
                          "TensorRT installed (run with --dry-run to see the commands)")
    for c in cmds:
        subprocess.run(c, check=True)
    return lines
