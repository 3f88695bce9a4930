# Partnerships Orchestrator — every target sets up what it needs first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup services run test lint bench clean

setup: $(STAMP)

# The distributed tests start their own RabbitMQ from Debian's package (never the system service).
RABBITMQ_SERVER := /usr/lib/rabbitmq/bin/rabbitmq-server
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

services: $(RABBITMQ_SERVER)

$(RABBITMQ_SERVER):
	$(SUDO) apt-get update -q
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends rabbitmq-server

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test]"
	touch $(STAMP)

run: setup  ## set up and start the product on http://127.0.0.1:3000 (Ctrl-C stops it)
	$(BIN)/partnerships up

test: setup services  ## set up and run the whole test suite (starts its own PostgreSQL and RabbitMQ)
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check partnerships_orchestrator partnerships_orchestrator_tests benchmarks
	$(BIN)/mypy partnerships_orchestrator
	$(BIN)/bandit -q -r partnerships_orchestrator  # each remaining finding is marked on its line with its reason

bench: setup services
	$(BIN)/python benchmarks/compile.py
	$(BIN)/python benchmarks/run_overhead.py
	$(BIN)/python benchmarks/connectors.py
	$(BIN)/python benchmarks/scale_out.py

clean:
	rm -rf .partnerships
