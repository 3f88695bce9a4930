# Partnerships Orchestrator — every target sets up what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup run test lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: setup  ## set up and start the product on http://127.0.0.1:3000 (Ctrl-C stops it)
	$(BIN)/partnerships up

test: setup  ## set up and run the whole test suite
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check partnerships_orchestrator partnerships_orchestrator_tests benchmarks
	$(BIN)/mypy partnerships_orchestrator

bench: setup
	$(BIN)/python benchmarks/compile.py
	$(BIN)/python benchmarks/run_overhead.py
	$(BIN)/python benchmarks/connectors.py

clean:
	rm -rf .partnerships
