# agentgraph — the two commands are `make run` and `make test`; both install what they need.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DB := .agentgraph/demo.db

.PHONY: help run example-research test lint lock lint-infra test-rules format unit e2e bench emulators demo-emulators openapi package deploy destroy clean web chromium
CHECKOV_VERSION := 3.3.30
PROJECT ?=
REGION ?= us-central1

help:
	@echo "make run        run the demo graph on the embedded local backend"
	@echo "make example-research  the research orchestrator (map, loop, subgraph, planned subagents, approval), offline"
	@echo "make test       install, lint (ruff, mypy) and run every test"
	@echo "make bench      benchmarks (not part of test)"
	@echo "make emulators  the whole gcp backend on this machine: emulators + functions + web console (foreground)"
	@echo "make web        build the web console (web/dist: npm ci + vite build)"
	@echo "make demo-emulators  the demo graph through the HTTP api of that stack"
	@echo "make e2e        only the end-to-end tests of the functions on the emulators"
	@echo "make openapi    regenerate functions/openapi.yaml from the api's routes and models"
	@echo "make deploy PROJECT=p [REGION=r]   terraform apply in infra/ (see infra/README.md)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Dependencies come from the hash-checked lock files in requirements/ (pip-tools; `make lock`
# upgrades them on purpose); the package itself is installed without resolving anything.
# `pip check` fails when pyproject.toml asks for something the lock does not satisfy.
# Stamps record what is installed; they are redone when a lock file changes.
LOCK_DEV := requirements/dev.txt
LOCK_FUNCTIONS := requirements/functions.txt

$(VENV)/.test-installed: $(LOCK_DEV) pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK_DEV)
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/pip check
	@touch $@ $(VENV)/.run-installed

$(VENV)/.run-installed: $(LOCK_DEV) pyproject.toml | $(BIN)/python
	$(MAKE) $(VENV)/.test-installed
	@touch $@

# Re-resolve both lock files from pyproject.toml: the upgrade is a reviewed change.
PIP_COMPILE = $(BIN)/pip-compile --quiet --generate-hashes --strip-extras --unsafe-package agentgraph --no-emit-index-url --no-emit-find-links --upgrade
lock: $(VENV)/.test-installed
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) --extra test -o $(LOCK_DEV) pyproject.toml
	CUSTOM_COMPILE_COMMAND="make lock" $(PIP_COMPILE) --extra gcp -o $(LOCK_FUNCTIONS) pyproject.toml

# The peers the benchmarks compare with are not deployed, so they are not locked.
$(VENV)/.bench-installed: $(VENV)/.test-installed
	$(BIN)/pip install --quiet 'langgraph>=0.2' 'langgraph-checkpoint-sqlite>=2'
	@touch $@

run: $(VENV)/.run-installed
	$(BIN)/agentgraph run examples/code-review.yaml --tools agentgraph.tools.code_review --set code=@examples/sample_code.py --db $(DEMO_DB)

# Waits for approval before its final answer: approve from another terminal with the
# `agentgraph approve ...` command it prints.
TOPIC ?= durable agent runtimes
example-research: $(VENV)/.run-installed
	$(BIN)/agentgraph run examples/research.yaml --set topic="$(TOPIC)" --db $(DEMO_DB)

lint: $(VENV)/.test-installed
	$(BIN)/ruff check shared functions emulator tests bench
	$(BIN)/ruff format --check shared functions emulator tests bench
	$(BIN)/mypy
	cd shared && ../$(BIN)/lint-imports ../.importlinter

format: $(VENV)/.test-installed
	$(BIN)/ruff format shared functions emulator tests bench
	$(BIN)/ruff check --fix shared functions emulator tests bench

# The OpenAPI document is generated from the api's routes and models (agentgraph.api.openapi);
# tests/unit/test_openapi.py fails when functions/openapi.yaml is not what this writes.
openapi: $(VENV)/.test-installed
	$(BIN)/python -m agentgraph.api.openapi > functions/openapi.yaml

unit: $(VENV)/.test-installed
	$(BIN)/pytest tests/unit -q

e2e: $(VENV)/.test-installed
	$(BIN)/pytest tests/system/test_functions_e2e.py -q

# Benchmarks print a table and write bench/results.json; e.g. BENCH_ARGS="--only local".
BENCH_ARGS ?=
bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench.run $(BENCH_ARGS)

# `make emulators` listens on fixed ports (firestore N, pubsub N+1, tasks N+2, Gemini stub
# N+3, api N+10, ...) so `make demo-emulators` finds its api; without one running, the demo
# starts a stack of its own on free ports.
EMULATOR_BASE_PORT ?= 8480
API_URL := http://127.0.0.1:$(shell echo $$(( $(EMULATOR_BASE_PORT) + 10 )))

emulators: $(VENV)/.test-installed web
	$(BIN)/python -m emulator.stack --base-port $(EMULATOR_BASE_PORT)

demo-emulators: $(VENV)/.test-installed
	@if curl -fsS $(API_URL)/healthz >/dev/null 2>&1; then \
		$(BIN)/python -m emulator.demo --api $(API_URL); \
	else \
		$(BIN)/python -m emulator.demo; \
	fi

# The web console (web/): npm ci from its lock, then tsc + vite build into web/dist; redone
# when a source or the lock changes. Firebase Hosting serves web/dist (infra/hosting.tf).
WEB_SOURCES := $(wildcard web/src/*) web/index.html web/vite.config.ts web/tsconfig.json
web/node_modules/.package-lock.json: web/package-lock.json web/package.json
	cd web && npm ci --no-audit --no-fund
	@touch $@

web/dist/index.html: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && npm run build

web: web/dist/index.html

# The browser tests drive Debian's chromium with its chromedriver (nothing can download a
# browser build here); installed once, skipped when present. CI runs as root.
chromium:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; \
	fi

# checkov pins an older `packaging` than pytest allows, so it gets its own venv.
.venv-checkov/bin/checkov:
	$(PYTHON) -m venv .venv-checkov
	.venv-checkov/bin/pip install --quiet checkov==$(CHECKOV_VERSION)

lint-infra: $(VENV)/.test-installed .venv-checkov/bin/checkov
	terraform fmt -check -recursive infra
	$(BIN)/pytest tests/infra -q

# Firestore security rules against the Firestore emulator (npm @firebase/rules-unit-testing).
test-rules:
	bash tests/rules/run.sh

test: lint .venv-checkov/bin/checkov test-rules web chromium
	terraform fmt -check -recursive infra
	$(BIN)/pytest -q

# The deployable archive for Cloud Functions: functions/ + the agentgraph package +
# requirements.txt (the hash-checked functions lock: Cloud Build installs exactly that set).
# Byte-for-byte reproducible, so an unchanged archive redeploys nothing.
package: $(VENV)/.run-installed
	rm -rf build/function-source build/function-source.zip && mkdir -p build/function-source
	cp functions/main.py functions/openapi.yaml build/function-source/ && cp -r shared/agentgraph build/function-source/
	cp $(LOCK_FUNCTIONS) build/function-source/requirements.txt
	find build/function-source -name __pycache__ -prune -exec rm -rf {} +
	find build/function-source -exec touch -t 198001010000 {} +
	cd build/function-source && find . -type f | LC_ALL=C sort | zip -X -q ../function-source.zip -@

deploy: package web
	@test -n "$(PROJECT)" || (echo "usage: make deploy PROJECT=my-project [REGION=us-central1]"; exit 2)
	infra/deploy.sh $(PROJECT) $(REGION)

destroy:
	@test -n "$(PROJECT)" || (echo "usage: make destroy PROJECT=my-project [REGION=us-central1]"; exit 2)
	infra/destroy.sh $(PROJECT) $(REGION)

clean:
	rm -rf $(VENV) .venv-tasks .venv-checkov .agentgraph build .pytest_cache .mypy_cache .ruff_cache tests/rules/node_modules web/node_modules web/dist
