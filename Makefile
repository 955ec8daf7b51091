PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
FAIRFACE ?= ../shared/fairface

.PHONY: setup test lint typecheck unit demo bench clean

setup: $(BIN)/hpo

$(BIN)/hpo: pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[cpu,dev]'
	touch $(BIN)/hpo

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

unit: setup
	$(BIN)/pytest

test: lint typecheck unit

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
