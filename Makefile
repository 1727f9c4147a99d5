# driftline: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install from constraints.txt (the exact versions the tests
# passed with) on first use; later runs reuse it.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export DRIFTLINE_HOME ?= $(CURDIR)/.driftline
export AIRFLOW_HOME ?= $(DRIFTLINE_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export PATH := $(CURDIR)/$(BIN):$(PATH)

DEMO_START ?= 2026-01-01
DEMO_END ?= 2026-01-08
DEMO_ROWS ?= 5000

.PHONY: install demo test lint bench airflow-init airflow-ui dvc-repro clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

airflow-init: install
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1
	$(BIN)/airflow dags reserialize > $(AIRFLOW_HOME)/reserialize.log 2>&1

## demo: simulate days of transactions and run the real ingest DAG over them.
demo: airflow-init
	$(BIN)/driftline simulate --start $(DEMO_START) --end $(DEMO_END) --rows-per-day $(DEMO_ROWS)
	$(PY) scripts/run_dag.py ingest_validate_materialize $(DEMO_START) $(DEMO_END) \
		> $(AIRFLOW_HOME)/demo-dag-runs.log 2>&1 \
		|| (tail -n 40 $(AIRFLOW_HOME)/demo-dag-runs.log; exit 1)
	grep -E '^ingest_validate_materialize ' $(AIRFLOW_HOME)/demo-dag-runs.log
	$(BIN)/driftline where

## test: the whole suite; pytest's "no tests collected" (exit 5) is a failure.
test: install
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: install
	$(BIN)/ruff check src dags scripts tests bench feature_repo
	$(BIN)/ruff format --check src dags scripts tests bench feature_repo
	$(BIN)/mypy

bench: install
	$(PY) bench/features_bench.py

## airflow-ui: the Airflow UI on http://localhost:8080 (trigger and backfill DAGs).
airflow-ui: airflow-init
	$(BIN)/airflow standalone

dvc-repro: install
	$(BIN)/dvc repro

clean:
	rm -rf $(DRIFTLINE_HOME)
