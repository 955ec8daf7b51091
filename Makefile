PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FAIRFACE ?= ../shared/fairface

.PHONY: setup test quick lint typecheck unit demo clean

setup: $(BIN)/hpo

$(BIN)/hpo: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,dev,dlib]'
	touch $(BIN)/hpo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

test: lint typecheck unit

# The fast loop: tests marked slow (processes, whole flows) and e2e left out.
quick: lint typecheck
	$(BIN)/pytest -m "not slow"

# The whole flow on this machine (SQLite, dlib's face network, real FairFace images); extra flags:
# DEMO_ARGS='--dashboard --port 8081'.
demo: setup
	$(BIN)/hpo demo $(DEMO_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
