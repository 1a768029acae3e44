# stockctl — the two commands of the README, and the rest of the developer loop.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test lint services bench-tools bench bench-quick bench-scale install clean

$(STAMP): pyproject.toml scripts/venv.sh
	PYTHON=$(PYTHON) scripts/venv.sh $(VENV)
	touch $(STAMP)

install: $(STAMP)

## make run: the whole system on the embedded default (SQLite file, no Redis):
## schema, demo data if empty, a stock overview, then the API and worker jobs in one process
run: install
	$(BIN)/stockctl init
	$(BIN)/stockctl seed --if-empty --products 200 --warehouses 5
	$(BIN)/stockctl overview --low 5
	$(BIN)/stockctl up

## make test: lint, make sure PostgreSQL and Redis answer, run every test
test: install lint services
	$(BIN)/pytest $(PYTEST_ARGS)

services:
	scripts/services.sh

## the benchmarks' load generators: wrk and pgbench (Debian packages, installed if missing)
bench-tools:
	scripts/bench_tools.sh

lint: install
	$(BIN)/ruff check stockctl tests bench
	$(BIN)/ruff format --check stockctl tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

## make bench: every benchmark in full (opt-in ones aside) -> bench/RESULTS.md (under 30 min)
bench: install services bench-tools
	$(BIN)/python bench/run_all.py

## make bench-quick: every benchmark in its short mode -> bench/RESULTS-quick.md (about 3 min)
bench-quick: install services bench-tools
	$(BIN)/python bench/run_all.py --quick

## make bench-scale: the seed's 10x (10M inventory rows) against 200K; heavy, opt-in.
## Its figures join bench/RESULTS.md. SCALE_ARGS="--products 20000" for a smaller run.
SCALE_ARGS ?=
bench-scale: install services bench-tools
	$(BIN)/python bench/run_all.py scale --script-args "$(SCALE_ARGS)"

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
