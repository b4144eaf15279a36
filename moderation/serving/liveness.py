"""Triton's liveness, told by a real inference on each model (the chart's liveness probe).

Triton's python backend keeps reporting ready and live after a model's stub process has
died (README: Failure behaviour), so the probe sends a tiny image to ``clip_image`` and a
word to ``clip_text`` over HTTP and fails unless both answer.

    python -m moderation.serving.liveness [--url http://127.0.0.1:8000] [--timeout 5]
"""

from __future__ import annotations

import argparse
import json
import struct
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence

from moderation.core.images import solid_png


def _infer(url: str, model: str, body: bytes, json_length: int | None, timeout_s: float) -> None:
    headers = {"Content-Type": "application/octet-stream"}
    if json_length is not None:  # Triton's binary tensor extension: JSON, then raw tensors
        headers["Inference-Header-Content-Length"] = str(json_length)
    req = urllib.request.Request(f"{url}/v2/models/{model}/infer", data=body, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        answer = json.loads(resp.read())
    if not answer.get("outputs"):
        raise RuntimeError(f"{model}: no outputs in {answer}")


def check(url: str, timeout_s: float) -> None:
    image = solid_png(16, (128, 128, 128))
    tensor = struct.pack("<I", len(image)) + image  # one BYTES element: length, then bytes
    header = json.dumps({
        "inputs": [{"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(tensor)}}],
        "outputs": [{"name": "EMBEDDING", "parameters": {"binary_data": False}}],
    }).encode()
    _infer(url, "clip_image", header + tensor, len(header), timeout_s)
    text = json.dumps({"inputs": [{"name": "TEXT", "shape": [1, 1], "datatype": "BYTES",
                                   "data": ["liveness"]}]}).encode()
    _infer(url, "clip_text", text, None, timeout_s)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--timeout", type=float, default=5.0)
    args = p.parse_args(argv)
    try:
        check(args.url.rstrip("/"), args.timeout)
    except (OSError, urllib.error.URLError, RuntimeError, ValueError) as exc:
        print(f"not live: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
