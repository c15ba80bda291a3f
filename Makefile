# The two commands a newcomer needs: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Pinned, hashed dependencies (make lock): runtime for the image, runtime + dev for the venv and CI.
LOCK := requirements.lock
DEV_LOCK := requirements-dev.lock
LOCK_FLAGS := --universal --python-version 3.11 --generate-hashes --custom-compile-command 'make lock'

.PHONY: run test test-faults test-cluster lint unit services browser bench docs lock clean

$(STAMP): pyproject.toml $(DEV_LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r $(DEV_LOCK)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

venv: $(STAMP)

services:
	bash deploy/local/ensure-services.sh

## Debian's Chromium for the console's browser tests (Playwright drives it; never `playwright install`).
browser:
	@test -x /usr/bin/chromium || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation >/dev/null)

## Start RabbitMQ and PostgreSQL if needed, migrate, and run the whole stack with a mail catcher.
run: $(STAMP) services
	$(BIN)/roac up

## Lint, type-check and run every test (unit, integration, end-to-end) against the real services.
test: $(STAMP) services browser lint
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy shared services tests bench

## Fault injection against the live stack (stops RabbitMQ and PostgreSQL: run it alone).
test-faults: $(STAMP) services
	$(BIN)/pytest -q tests/faults

## Opt-in: a 3-node RabbitMQ cluster on this machine, one node stopped mid-stream.
test-cluster: $(STAMP) services
	$(BIN)/pytest -q -s tests/cluster

unit: $(STAMP)
	$(BIN)/pytest -q tests/unit

## Measure throughput (RabbitMQ ceiling, ingest single and batched, matcher); writes docs/performance.md.
bench: $(STAMP) services
	@command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null)
	$(BIN)/python bench/run_all.py --write docs/performance.md

## Pin the dependencies after a change in pyproject.toml: keeps every pin it can (`UPGRADE=1` takes
## the newest each range allows); the runtime lock takes the dev lock's versions, so the image runs
## what the tests ran. A unit test fails when pyproject names a package a lock lacks.
lock:
	@test -x $(BIN)/uv || $(BIN)/pip install --quiet 'uv>=0.5'
	$(BIN)/uv pip compile pyproject.toml --extra dev $(LOCK_FLAGS) $(if $(UPGRADE),--upgrade) --quiet -o $(DEV_LOCK)
	$(BIN)/uv pip compile pyproject.toml $(LOCK_FLAGS) -c $(DEV_LOCK) --quiet -o $(LOCK)

## Regenerate the OpenAPI and AsyncAPI documents in docs/ (a unit test fails when they drift).
docs: $(STAMP)
	$(BIN)/python -m services.api_docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
