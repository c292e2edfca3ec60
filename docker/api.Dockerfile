# The HTTP API only: FastAPI + uvicorn, no torch (the import contract keeps service/ torch-free).
# Build from the repository root:  docker build -f docker/api.Dockerfile -t instyle-api .
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app

# Dependency layer first: source edits do not reinstall it.
FROM base AS deps
COPY docker/requirements-api.txt /tmp/requirements-api.txt
RUN pip install -r /tmp/requirements-api.txt

FROM deps AS app
COPY pyproject.toml README.md ./
COPY model_store ./model_store
COPY instyle ./instyle
COPY service ./service
# --no-deps: the package's own dependency list includes torch, which the API never imports
RUN pip install --no-deps . && rm -rf /app/* \
    && useradd --create-home --uid 10001 instyle && mkdir -p /data/styles && chown instyle /data/styles
USER instyle
ENV INSTYLE_STORE=/data/styles PORT=8000 UVICORN_WORKERS=2
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]
ENTRYPOINT ["sh", "-c", "exec uvicorn service.app:create_app --factory --host 0.0.0.0 --port \"$PORT\" --workers \"$UVICORN_WORKERS\" --proxy-headers"]
