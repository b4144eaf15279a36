"""The GPU benchmark (``scripts/gpu-bench.sh`` on a bare GPU machine), printed as one JSON:

- ``bare_encoder``: the image tower alone, fp16 CUDA graphs, preprocessed pixels already
  on the GPU, at batch 1/8/32/64/128: the ceiling;
- ``gpu_decode``: nvJPEG decoding plus the GPU resize and normalise, batch 128, no tower;
- ``cpu_decode``: Pillow decoding and preprocessing on every core, for comparison;
- ``clip_image``: Triton's ``clip_image`` from ``triton_models/gpu`` fed encoded 640x480
  JPEGs (about 50 KB) over gRPC, 32 per request, at several requests in flight: images/s,
  request latency percentiles and GPU utilisation (``nvidia-smi``);
- ``ratio_end_to_end_to_bare``: the best ``clip_image`` rate over the best bare rate.

``--smoke`` runs every step on the CPU with the demo bundle and a ``KIND_CPU`` copy of the
GPU repository, in seconds: what the tests check here, where no GPU is.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from moderation.core.images import DecodeLimits, decode_image, preprocess
from moderation.devtools import devstack
from moderation.devtools.bench_images import jpeg_uploads
from moderation.models.bundle import load_bundle
from moderation.serving.gpu_images import GpuImages, GpuOptions

BATCHES = (1, 8, 32, 64, 128)
REQUEST_IMAGES = 32


def _timed(step: Any, images_per_step: int, seconds: float, sync: Any) -> float:
    """Images/s of ``step`` repeated for ``seconds`` (after one warm-up call)."""
    step()
    sync()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    sync()
    return round(n * images_per_step / (time.perf_counter() - start), 1)


def measure_bare(images: GpuImages, seconds: float, sync: Any) -> dict[str, float]:
    import torch

    size = images.spec.size
    out = {}
    for b in BATCHES:
        pixels = torch.randn((b, 3, size, size), device=images.device)
        out[str(b)] = _timed(lambda p=pixels: images.embed_pixels(p), b, seconds, sync)
    return out


def measure_gpu_decode(images: GpuImages, jpegs: list[bytes], seconds: float,
                       sync: Any) -> float:
    batch = (jpegs * (128 // len(jpegs) + 1))[:128]
    return _timed(lambda: images.pixels(images.decode(batch, DecodeLimits())), len(batch),
                  seconds, sync)


def _cpu_decode_loop(args: tuple[list[bytes], int, float]) -> int:
    jpegs, size, seconds = args
    from moderation.core.images import Preprocess

    spec = Preprocess(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        preprocess(decode_image(jpegs[n % len(jpegs)], DecodeLimits(), size), spec)
        n += 1
    return n


def measure_cpu_decode(jpegs: list[bytes], size: int, seconds: float) -> dict[str, float]:
    cores = os.cpu_count() or 1
    with multiprocessing.get_context("spawn").Pool(cores) as pool:
        counts = pool.map(_cpu_decode_loop, [(jpegs, size, seconds)] * cores)
    return {"cores": cores, "images_per_s": round(sum(counts) / seconds, 1)}


class GpuMonitor:
    """Mean GPU utilisation from ``nvidia-smi`` sampled every 200 ms (None without it)."""

    def __init__(self) -> None:
        self.samples: list[float] = []
        self._proc: subprocess.Popen[str] | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> GpuMonitor:
        if shutil.which("nvidia-smi"):
            self._proc = subprocess.Popen(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                 "-lms", "200"], stdout=subprocess.PIPE, text=True)
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        return self

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            with contextlib.suppress(ValueError):  # a header or a blank line
                self.samples.append(float(line.split(",")[0]))

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    @property
    def mean(self) -> float | None:
        return round(float(np.mean(self.samples)), 1) if self.samples else None


def _client_loop(args: tuple[str, list[bytes], int, float]) -> tuple[int, list[float]]:
    """One client process: ``threads`` blocking requests in flight for ``seconds``."""
    url, jpegs, threads, seconds = args
    import tritonclient.grpc as grpcclient

    batch = np.empty((REQUEST_IMAGES, 1), dtype=object)
    for i in range(REQUEST_IMAGES):
        batch[i, 0] = jpegs[i % len(jpegs)]
    done = [0] * threads
    latencies: list[list[float]] = [[] for _ in range(threads)]
    stop_at = time.perf_counter() + seconds

    def loop(slot: int) -> None:
        client = grpcclient.InferenceServerClient(url)
        inp = grpcclient.InferInput("IMAGE", [REQUEST_IMAGES, 1], "BYTES")
        inp.set_data_from_numpy(batch)
        out = [grpcclient.InferRequestedOutput("EMBEDDING")]
        client.infer("clip_image", [inp], outputs=out)  # warm-up, not counted
        while (t := time.perf_counter()) < stop_at:
            client.infer("clip_image", [inp], outputs=out)
            latencies[slot].append(time.perf_counter() - t)
            done[slot] += REQUEST_IMAGES
        client.close()

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return sum(done), [x for lat in latencies for x in lat]


def measure_clip_image(url: str, jpegs: list[bytes], in_flight: int,
                       seconds: float) -> dict[str, Any]:
    procs = min(in_flight, max(1, (os.cpu_count() or 2) // 2))
    threads = [in_flight // procs + (1 if i < in_flight % procs else 0) for i in range(procs)]
    with GpuMonitor() as gpu, multiprocessing.get_context("spawn").Pool(procs) as pool:
        start = time.perf_counter()
        results = pool.map(_client_loop, [(url, jpegs, t, seconds) for t in threads])
        elapsed = time.perf_counter() - start
    images = sum(n for n, _ in results)
    lat = np.asarray([x for _, lats in results for x in lats]) * 1000
    return {"in_flight_requests": in_flight, "images_per_request": REQUEST_IMAGES,
            # the processes' start-up counts against the rate: a conservative number
            "images_per_s": round(images / max(elapsed, seconds), 1),
            **{f"p{q}_ms": round(float(np.percentile(lat, q)), 1) for q in (50, 95, 99)},
            "gpu_utilisation_pct": gpu.mean}


def _smoke_repository(dst: Path) -> Path:
    """The GPU repository with KIND_CPU instances (the fallback path), for --smoke."""
    shutil.copytree(devstack.GPU_MODEL_REPOSITORY, dst)
    for cfg in dst.glob("*/config.pbtxt"):
        cfg.write_text(cfg.read_text().replace("KIND_GPU", "KIND_CPU")
                       .replace("count: 2", "count: 1"))
    return dst


def bundle_for(name: str, cache: Path) -> str:
    if name == "vit-b-32":
        from moderation.models.hf import init_random

        out = cache / "vit-b-32"
        if not (out / "manifest.json").exists():
            init_random(out, "ViT-B-32", 0)
        return str(out)
    return name


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    smoke = args.smoke
    if not smoke and not torch.cuda.is_available():
        raise SystemExit("gpu-bench: no CUDA device (torch.cuda.is_available() is False); "
                         "--smoke runs the steps on the CPU")
    device = "cpu" if smoke else "cuda"
    sync = (lambda: None) if smoke else torch.cuda.synchronize
    seconds = 0.5 if smoke else args.seconds
    work = Path(tempfile.mkdtemp(prefix="gpu-bench-"))
    bundle_ref = bundle_for("demo" if smoke else args.bundle, work)
    bundle = load_bundle(bundle_ref)
    jpegs = jpeg_uploads(8 if smoke else 64)
    result: dict[str, Any] = {
        "device": torch.cuda.get_device_name(0) if not smoke else "cpu (smoke)",
        "bundle": bundle.name, "image_size": bundle.preprocess_spec.size,
        "jpeg_kb_mean": round(float(np.mean([len(j) for j in jpegs])) / 1024, 1),
        "torch": torch.__version__}
    t0 = time.perf_counter()
    images = GpuImages(bundle, GpuOptions(device, half=not smoke, cuda_graphs=not smoke))
    result["graph_capture_s"] = round(time.perf_counter() - t0, 2)
    result["bare_encoder"] = measure_bare(images, seconds, sync)
    result["gpu_decode_images_per_s"] = measure_gpu_decode(images, jpegs, seconds, sync)
    del images
    if not smoke:
        torch.cuda.empty_cache()
    result["cpu_decode"] = measure_cpu_decode(jpegs, bundle.preprocess_spec.size, seconds)
    repo = _smoke_repository(work / "repository") if smoke else devstack.GPU_MODEL_REPOSITORY
    triton, ports = devstack.start_triton(work, repo, env={"MODERATION_MODEL__BUNDLE":
                                                           bundle_ref}, timeout_s=300)
    try:
        result["clip_image"] = [measure_clip_image(f"127.0.0.1:{ports.grpc}", jpegs, n,
                                                   seconds * 2)
                                for n in ((1, 2) if smoke else (1, 4, 16, 32, 64))]
    finally:
        triton.stop()
    best_bare = max(result["bare_encoder"].values())
    best = max(r["images_per_s"] for r in result["clip_image"])
    result["ratio_end_to_end_to_bare"] = round(best / best_bare, 3)
    result["ratio_end_to_end_to_bare_batch32"] = round(best / result["bare_encoder"]["32"], 3)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description="GPU benchmark: bare encoder vs clip_image")
    ap.add_argument("--bundle", default="vit-b-32",
                    help="vit-b-32 (random weights, real shape; written once), demo or a path")
    ap.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    ap.add_argument("--smoke", action="store_true", help="every step on the CPU, in seconds")
    ap.add_argument("--out", help="also write the JSON to this directory")
    args = ap.parse_args()
    result = run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "gpu-bench.json").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
