#!/usr/bin/env bash
# Train the demo model on a GPU (README: "Training on a GPU"): four towers on twice the
# scenes, written as a bundle to $OUT/emoji-minilm-gpu, then evaluated here like any other.
#
# Here (Debian packages, npm cache, package index):
#                                  scripts/gpu-train.sh --pack     writes .gpu-train/
#                                  scripts/gpu-train.sh --dry-run  checks it and the carry size
# On a bare GPU machine (Python 3.12, torch with CUDA; no network), from the project root
# with .gpu-train/ carried along:
#                                  bash scripts/gpu-train.sh [train_pack options]
# e.g. "--samples 20000 --epochs 1" first, to time a step before the full run.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
case "$mode" in
  --pack) exec .venv/bin/python -m moderation.devtools.train_pack pack ;;
  --dry-run) exec .venv/bin/python -m moderation.devtools.train_pack check ;;
  run|--*) ;;  # --samples, --epochs, --members... go to train_pack train
  *) echo "usage: $0 [--pack | --dry-run | train_pack train options]" >&2; exit 2 ;;
esac
if [ "$mode" = run ]; then shift || true; fi
PY=${PYTHON:-python3}
DEST=${GPU_TRAIN_DIR:-/tmp/gpu-train}
"$PY" -m moderation.devtools.train_pack unpack --dest "$DEST"  # standard library only
export PYTHONPATH="$PWD:$DEST/site${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
exec timeout 540 "$PY" -m moderation.devtools.train_pack train \
  --out "${OUT:-.gpu-train}/emoji-minilm-gpu" "$@"
