# Quickstart: `make demo` and `make test`. Both set up .venv (pinned) and system packages.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SYSTEM_STAMP := $(VENV)/.system-deps
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test test-fast lint eval train samples chaos bench image clean

setup: $(STAMP) $(SYSTEM_STAMP)

$(STAMP): pyproject.toml requirements.lock
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 required"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(SYSTEM_STAMP): scripts/system-deps.sh | $(STAMP)
	scripts/system-deps.sh
	touch $@

# stack up (unless running), apply policies/, a worker, samples/* through Kafka, stack down
demo: setup
	$(BIN)/moderation demo

# kill -9 workers while 2,000 uploads flow on the embedded stack; last line = summary
chaos: setup
	$(BIN)/moderation chaos

# pipeline vs raw encoder vs naive baseline, worker CPU per upload, recent-index and console
# costs, on a fresh embedded stack (about 8 minutes)
bench: setup
	$(BIN)/moderation bench

# the worker and triton-cpu images, built here with buildah (README: Deploy)
image: setup
	scripts/build-images.sh

test: setup
	$(BIN)/python -m pytest -q

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check moderation tests
	$(BIN)/mypy

eval: setup
	$(BIN)/moderation models eval

train: setup
	$(BIN)/moderation models train

samples: setup
	$(BIN)/moderation models render-samples --out samples

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
