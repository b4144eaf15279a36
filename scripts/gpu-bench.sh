#!/usr/bin/env bash
# The GPU benchmark (README: GPU path): bare encoder vs clip_image fed JPEG bytes, one JSON.
#
# Here (with the package index):  scripts/gpu-bench.sh --pack     writes .gpu-bench/
#                                  scripts/gpu-bench.sh --dry-run  checks it and the carry size
#                                  scripts/gpu-bench.sh --smoke    every step on this CPU
# On a bare GPU machine (Python 3.12, torch with CUDA, torchvision, transformers; no
# network), from the project root with .gpu-bench/ carried along:
#                                  bash scripts/gpu-bench.sh       (at most 8 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
case "$mode" in
  --pack) exec .venv/bin/python -m moderation.devtools.gpu_pack pack ;;
  --dry-run) exec .venv/bin/python -m moderation.devtools.gpu_pack check ;;
  --smoke) exec .venv/bin/python -m moderation.devtools.gpu_bench --smoke ;;
  run) ;;
  *) echo "usage: $0 [--pack | --dry-run | --smoke]" >&2; exit 2 ;;
esac
PY=${PYTHON:-python3}
DEST=${GPU_BENCH_DIR:-/tmp/gpu-bench}
"$PY" -m moderation.devtools.gpu_pack unpack --dest "$DEST"  # standard library only
export PYTHONPATH="$PWD:$DEST/site${PYTHONPATH:+:$PYTHONPATH}"
export MODERATION_TRITON_HOME="$DEST/triton/tritonserver"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec timeout 470 "$PY" -m moderation.devtools.gpu_bench --out "${OUT:-.gpu-bench}"
