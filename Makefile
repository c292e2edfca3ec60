# instyle -- the two entry points of the README, plus their parts.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: serve test lint typecheck pytest setup clean bench

# Set up, then run the service in embedded mode (the API, its stylize worker processes and
# training thread, a private Redis) with the shipped styles. Set INSTYLE_REDIS_URL to serve the API only and run `instyle worker`s.
serve: $(STAMP)
	$(BIN)/instyle serve --host $(HOST) --port $(PORT)

# Set up, then lint, type-check and run the test suite (the tests that need a GPU are
# deselected: `pytest -m gpu` on a GPU machine). The tests start their own redis-server.
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check stylenet model_store instyle service worker tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

setup: $(STAMP)

# Inference benchmark (eager vs ONNX Runtime vs the worker's path): prints a table, writes JSON.
bench: $(STAMP)
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/inference.py $(BENCH_ARGS)

# torch is pinned first: where a local 2.13.0 CPU wheel is provided pip takes it; elsewhere the
# registry's default build (CUDA on Linux; PIP_INDEX_URL=<a CPU wheel index> for a CPU-only one).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	$(BIN)/python -m stylenet.native
	touch $(STAMP)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
