#!/bin/sh
# tritonserver with the python backend set up in /opt/triton; extra arguments pass through
# (the model repository, ports, ...).
set -eu
exec tritonserver \
  --backend-directory=/opt/triton/backends \
  --cache-directory=/opt/venv/lib/python3.11/site-packages/pytriton/tritonserver/caches \
  --allow-gpu-metrics=false \
  --pinned-memory-pool-byte-size=0 \
  --exit-timeout-secs=10 \
  "$@"
