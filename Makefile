# agentgraph — the two commands are `make run` and `make test`; both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DB := .agentgraph/demo.db

.PHONY: help run test lint format unit bench emulators demo-emulators package deploy destroy clean

help:
	@echo "make run        run the demo graph on the embedded local backend"
	@echo "make test       install, lint (ruff, mypy) and run every test"
	@echo "make bench      benchmarks (not part of test)"
	@echo "make emulators  the local Google Cloud emulator stack (foreground)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Stamps record which extras are installed; they are redone when pyproject.toml changes.
$(VENV)/.run-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.test-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@ $(VENV)/.run-installed

run: $(VENV)/.run-installed
	$(BIN)/agentgraph run examples/code-review.yaml --set code=@examples/sample_code.py --db $(DEMO_DB)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check shared functions emulator tests bench
	$(BIN)/ruff format --check shared functions emulator tests bench
	$(BIN)/mypy

format: $(VENV)/.test-installed
	$(BIN)/ruff format shared functions emulator tests bench
	$(BIN)/ruff check --fix shared functions emulator tests bench

unit: $(VENV)/.test-installed
	$(BIN)/pytest tests/unit -q

test: lint
	$(BIN)/pytest -q

clean:
	rm -rf $(VENV) .agentgraph build .pytest_cache .mypy_cache .ruff_cache
