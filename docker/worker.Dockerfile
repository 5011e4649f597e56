# syntax=docker/dockerfile:1
# rexlabel worker: loads Rex-Omni once on a GPU and serves the Redis queues.
# Weights are never baked in: they download into the HF_HOME volume on first
# start (or mount a directory and point REXLABEL_MODEL at it).
#
#   docker build -f docker/worker.Dockerfile -t rexlabel-worker .     # from the repo root
#   docker build -f docker/worker.Dockerfile --build-arg INSTALL_VLLM=true -t rexlabel-worker:vllm .
#
# Build args:
#   CUDA_IMAGE       the NVIDIA base; "base" is enough because the torch wheels
#                    bring their own CUDA libraries (the host needs the driver)
#   INSTALL_VLLM     true adds the in-process vLLM engine (REXLABEL_ENGINE=vllm);
#                    vLLM pins its own torch
#   TORCH_INDEX_URL  e.g. https://download.pytorch.org/whl/cu124 to choose the
#                    CUDA build of torch; empty takes PyPI's default build

ARG CUDA_IMAGE=nvidia/cuda:12.4.1-base-ubuntu22.04
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build the (pure Python) wheel in a throw-away stage: the image holds no sources.
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY converters/ converters/
COPY common/ common/
COPY worker/ worker/
COPY backend/ backend/
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${CUDA_IMAGE}
ARG INSTALL_VLLM=false
ARG TORCH_INDEX_URL=""
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    HF_HOME=/models/hf \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    REXLABEL_WORKER_METRICS_PORT=9191

# Python 3.11 from Ubuntu 22.04 (universe), in a virtual environment. Not
# pinned: the security updates of the base release are what we want.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

RUN groupadd --system --gid 10001 rexlabel \
    && useradd --system --uid 10001 --gid rexlabel --create-home rexlabel \
    && mkdir -p /models/hf /models/rexlabel /checkpoints \
    && chown -R rexlabel:rexlabel /models

# torch from TORCH_INDEX_URL is bounded by pyproject's worker extra right after.
COPY --from=build /wheels /wheels
# hadolint ignore=DL3013
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        pip install --index-url "$TORCH_INDEX_URL" torch torchvision; \
    fi \
    && wheel="$(ls /wheels/rexlabel-*.whl)" \
    && pip install "${wheel}[worker]" \
    && if [ "$INSTALL_VLLM" = "true" ]; then pip install "${wheel}[vllm]"; fi \
    && rm -rf /wheels
WORKDIR /app
COPY docker/healthcheck.py docker/

USER 10001:10001
# Model downloads (Hugging Face cache): keep it on a volume so they happen once.
VOLUME ["/models/hf"]
EXPOSE 9191
# start-period: the first start downloads and loads the model.
HEALTHCHECK --interval=30s --timeout=10s --start-period=20m --retries=3 \
    CMD ["python", "docker/healthcheck.py", "worker"]
CMD ["rexlabel", "worker"]
