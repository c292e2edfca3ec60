# A job worker on a CUDA runtime: `instyle worker` holding TorchScript generators in memory.
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t instyle-worker .
# Queues, device and cache size come from the environment (INSTYLE_QUEUES, INSTYLE_DEVICE,
# INSTYLE_CACHE_SIZE, ...); see worker/settings.py.
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04
FROM ${BASE_IMAGE} AS base
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 VIRTUAL_ENV=/opt/venv PATH=/opt/venv/bin:$PATH
# gcc: a float32 CPU worker compiles its native kernels (stylenet.native) when it first needs them
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-venv gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/* && python3 -m venv /opt/venv
WORKDIR /app

# Dependency layers first (torch, then the rest), so source edits rebuild only the last stage.
FROM base AS deps
# The default index's Linux torch wheels are CUDA builds; TORCH_INDEX_URL can point elsewhere.
ARG TORCH_INDEX_URL=""
RUN if [ -n "$TORCH_INDEX_URL" ]; then pip install "torch==2.13.0" --index-url "$TORCH_INDEX_URL"; \
    else pip install "torch==2.13.0"; fi
COPY pyproject.toml README.md ./
RUN mkdir -p stylenet model_store instyle service worker && touch stylenet/__init__.py model_store/__init__.py \
    instyle/__init__.py service/__init__.py worker/__init__.py && pip install . && pip uninstall -y instyle

FROM deps AS app
COPY stylenet ./stylenet
COPY model_store ./model_store
COPY instyle ./instyle
COPY service ./service
COPY worker ./worker
RUN pip install --no-deps . && rm -rf /app/* \
    && useradd --create-home --uid 10001 instyle && mkdir -p /data/styles && chown instyle /data/styles
USER instyle
ENV INSTYLE_STORE=/data/styles INSTYLE_QUEUES=stylize INSTYLE_DEVICE=auto INSTYLE_CACHE_SIZE=8
ENTRYPOINT ["instyle", "worker"]
