# Two entry points: `make run` (set up, then run the whole job on the generated
# attribute world) and `make test` (set up, then run the whole test suite).
# Both create .venv from requirements.lock when it is missing and reuse it when present.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

export KEDRO_DISABLE_TELEMETRY := true
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export OMP_WAIT_POLICY := PASSIVE
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# No wheel cache: the CUDA build of torch is several GB, and a cached copy would double what setup writes to disk.
export PIP_NO_CACHE_DIR := 1

.PHONY: setup run test lint viz mlflow-ui serve clean-data benchmarks

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	@touch $(STAMP)

run: setup
	$(BIN)/kedro run $(ARGS)

test: setup
	$(BIN)/python -m pytest $(ARGS)

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

viz: setup
	$(BIN)/kedro viz run --autoreload

benchmarks: setup
	$(BIN)/python -m pip install --quiet -c requirements.lock -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/run_all.py $(ARGS)

mlflow-ui: setup
	$(BIN)/kedro mlflow ui

# Serve the registered classifier over HTTP (POST /invocations); MODEL defaults to the
# latest registered version, e.g. MODEL=runs:/<run_id>/zero_shot_classifier for another.
MODEL ?= models:/niwt-zero-shot-classifier/latest
PORT  ?= 5001
serve: setup
	PATH="$(abspath $(BIN)):$$PATH" MLFLOW_TRACKING_URI=sqlite:///$(abspath mlflow.db) \
	  $(BIN)/mlflow models serve -m "$(MODEL)" --env-manager local -h 127.0.0.1 -p $(PORT)

clean-data:
	find data -mindepth 2 ! -name .gitkeep -delete
