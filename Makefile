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
DEMO_END ?= 2026-01-17
DEMO_ROWS ?= 4000
DEMO_FRAUD_RATE ?= 0.02
# Training window: features start the day after the first simulated day.
TRAIN_START ?= 2026-01-02
TRAIN_TRIALS ?= 8
TRAIN_WORKERS ?= 2
MLFLOW_PORT ?= 5000
TRAIN_CONF = {"window_start": "$(TRAIN_START)", "window_end": "$(DEMO_END)", "trials": $(TRAIN_TRIALS), "workers": $(TRAIN_WORKERS)}

.PHONY: install demo test lint bench airflow-init airflow-ui mlflow-ui dvc-repro clean

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

## demo: simulate days of transactions, run the real ingest DAG over them (one run per
## day), then the train_register DAG: the Kubeflow pipeline tunes, trains, evaluates and
## registers the first model in MLflow.
demo: airflow-init
	$(BIN)/driftline simulate --start $(DEMO_START) --end $(DEMO_END) --rows-per-day $(DEMO_ROWS) \
		--fraud-rate $(DEMO_FRAUD_RATE)
	$(PY) scripts/run_dag.py ingest_validate_materialize $(DEMO_START) $(DEMO_END) \
		> $(AIRFLOW_HOME)/demo-dag-runs.log 2>&1 \
		|| (tail -n 40 $(AIRFLOW_HOME)/demo-dag-runs.log; exit 1)
	grep -E '^ingest_validate_materialize ' $(AIRFLOW_HOME)/demo-dag-runs.log
	$(PY) scripts/run_dag.py train_register --conf '$(TRAIN_CONF)' \
		> $(AIRFLOW_HOME)/demo-train.log 2>&1 \
		|| (tail -n 60 $(AIRFLOW_HOME)/demo-train.log; exit 1)
	grep -E 'train_register manual run' $(AIRFLOW_HOME)/demo-train.log
	$(BIN)/driftline where
	$(BIN)/driftline models

## test: the whole suite; pytest's "no tests collected" (exit 5) is a failure.
test: install
	$(PY) -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: install
	$(BIN)/ruff check src dags scripts tests bench feature_repo components pipelines
	$(BIN)/ruff format --check src dags scripts tests bench feature_repo components pipelines
	$(BIN)/mypy

## bench: the feature-job benchmark, then the tuning benchmark on a training set built
## from the demo's lake (run `make demo` first).
bench: install
	$(PY) bench/features_bench.py
	$(BIN)/driftline training-set --start $(TRAIN_START) --end $(DEMO_END) \
		--out $(DRIFTLINE_HOME)/training_set > /dev/null
	$(PY) bench/tuning_bench.py --training-set $(DRIFTLINE_HOME)/training_set

## airflow-ui: the Airflow UI on http://localhost:8080 (trigger and backfill DAGs).
airflow-ui: airflow-init
	$(BIN)/airflow standalone

## mlflow-ui: the MLflow UI on http://localhost:$(MLFLOW_PORT) (runs, trials, registry).
mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(DRIFTLINE_HOME)/mlflow/mlflow.db \
		--port $(MLFLOW_PORT)

dvc-repro: install
	$(BIN)/dvc repro

clean:
	rm -rf $(DRIFTLINE_HOME)
