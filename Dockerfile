# syntax=docker/dockerfile:1.7
# Images: worker (the service: worker, produce, policies; no torch), triton-cpu (Triton's
# python backend with the CPU models and the demo bundle), triton-gpu (NVIDIA's Triton with
# the TensorRT repository that `moderation models build-trt` writes; needs a GPU host).
#
#   make image        builds worker and triton-cpu here with buildah (see README: Deploy)
#
# Behind a proxy that re-signs TLS, pass its CA bundle as the build secret `ca`; a local
# directory of wheels (e.g. the CPU torch wheel) goes in as PIP_FIND_LINKS plus a mount.

ARG BASE_IMAGE=debian:bookworm-slim
ARG TRITON_GPU_IMAGE=nvcr.io/nvidia/tritonserver:25.10-py3

# --- Debian's Python 3.11 in a virtual environment: the base of the CPU images ---------------
FROM ${BASE_IMAGE} AS python
# Debian 12's Python 3.11 (bump with the base image: old package versions leave the mirror)
ARG PYTHON_DEB=3.11.2-6+deb12u9
ARG CA_CERTIFICATES_DEB=20250419~deb12u2
ENV VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11="${PYTHON_DEB}" \
      python3.11-venv="${PYTHON_DEB}" libpython3.11="${PYTHON_DEB}" \
      ca-certificates="${CA_CERTIFICATES_DEB}" \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/* \
 && groupadd --gid 10001 moderation \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin moderation

# --- build stage: install into /opt/venv, then copy only the venv onwards ----------------------
FROM python AS build
ARG PIP_INDEX_URL=https://pypi.org/simple
ARG PIP_EXTRA_INDEX_URL=
ARG PIP_FIND_LINKS=
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_INDEX_URL=${PIP_INDEX_URL} PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL} PIP_FIND_LINKS=${PIP_FIND_LINKS}
RUN python3.11 -m venv /opt/venv
WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY moderation ./moderation

FROM build AS worker-build
# the package and its service dependencies only, at the versions requirements.lock pins
RUN --mount=type=secret,id=ca,required=false \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && pip install --constraint requirements.lock . \
 && pip uninstall -y pip setuptools \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

FROM build AS triton-build
# CPU torch: from the PyTorch CPU index, or a local wheel directory (PIP_FIND_LINKS)
ARG TORCH_VERSION=2.13.0+cpu
RUN --mount=type=secret,id=ca,required=false \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && pip install "torch==${TORCH_VERSION}" \
 && grep -v '^torch==' requirements.lock > /tmp/constraints.txt \
 && pip install --constraint /tmp/constraints.txt ".[serving]" \
 && pip uninstall -y pip setuptools \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +
COPY docker/triton-cpu.sh /usr/local/bin/triton-cpu
# the python backend wants its stub for this Python next to libtriton_python.so
RUN server=/opt/venv/lib/python3.11/site-packages/pytriton/tritonserver \
 && mkdir -p /opt/triton/backends/python \
 && ln -s "$server"/backends/python/* /opt/triton/backends/python/ \
 && ln -s "$server"/python_backend_stubs/3.11/triton_python_backend_stub /opt/triton/backends/python/ \
 && ln -s "$server"/bin/tritonserver /usr/local/bin/tritonserver

# --- worker: `moderation worker | produce | policies ...` -------------------------------------
FROM python AS worker
COPY --from=worker-build /opt/venv /opt/venv
COPY policies /etc/moderation/policies
ENV MODERATION_POLICIES__DIR=/etc/moderation/policies MODERATION_WORKER__HTTP_HOST=0.0.0.0
USER 10001:10001
EXPOSE 9300
ENTRYPOINT ["moderation"]
CMD ["worker"]

# --- triton-cpu: tritonserver with the python backend, the CPU models, the demo bundle --------
FROM python AS triton-cpu
COPY --from=triton-build /opt/venv /opt/venv
COPY --from=triton-build /opt/triton /opt/triton
COPY --from=triton-build /usr/local/bin/tritonserver /usr/local/bin/triton-cpu /usr/local/bin/
COPY triton_models/cpu /models
# models load offline: the demo bundle and MiniLM ship in the image
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HOME=/tmp \
    LD_LIBRARY_PATH=/opt/venv/lib/python3.11/site-packages/nvidia_pytriton.libs
USER 10001:10001
EXPOSE 8000 8001 8002
ENTRYPOINT ["triton-cpu"]
CMD ["--model-repository=/models"]

# --- triton-gpu: NVIDIA's Triton (TensorRT backend) with the repository build-trt writes ------
# Build on a machine with the repository at ./build/trt-repository (see README: Real CLIP and
# GPUs): `moderation models export-onnx` then `moderation models build-trt`.
FROM ${TRITON_GPU_IMAGE} AS triton-gpu
COPY build/trt-repository /models
USER triton-server
EXPOSE 8000 8001 8002
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--strict-model-config=false"]
