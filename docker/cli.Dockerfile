# The instyle command line (train / stylize / styles) on CPU.
# Build from the repository root:  docker build -f docker/cli.Dockerfile -t instyle-cli .
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# gcc: float32 CPUs run stylize with native kernels (stylenet.native), compiled at first use
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /app

# Dependency layer first, so source edits do not reinstall torch.
FROM base AS deps
# Point TORCH_INDEX_URL at a CPU-only torch index to keep the image small.
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
RUN pip install --no-deps . && useradd --create-home --uid 10001 instyle && mkdir -p /data/styles && chown instyle /data/styles
USER instyle
ENV INSTYLE_STORE=/data/styles
ENTRYPOINT ["instyle"]
CMD ["styles"]
