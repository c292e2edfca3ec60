# instyle -- the two entry points of the README, plus their parts.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PHOTOS ?= instyle/assets/photos
OUT    ?= var/out

.PHONY: serve test lint typecheck pytest setup clean

# Set up, then show the shipped styles and stylize the bundled photos with each of them.
# (Becomes the HTTP service when the serving issue lands.)
serve: $(STAMP)
	$(BIN)/instyle styles
	@mkdir -p $(OUT)
	@for style in $$($(BIN)/instyle styles --json | $(BIN)/python -c 'import json,sys; print(" ".join(s["id"] for s in json.load(sys.stdin)))'); do \
		$(BIN)/instyle stylize $(PHOTOS)/*.jpg --style $$style --max-size 512 --output $(OUT)/$$style || exit 1; \
	done
	@echo "stylized photos are in $(OUT)/"

# Set up, then lint, type-check and run the whole test suite.
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check stylenet model_store instyle service worker tests

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest

setup: $(STAMP)

# torch is pinned first so that pip takes the provided 2.13.0 CPU wheel, never a CUDA build.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "torch==2.13.0"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
