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

# The first simulated day (the simulator's anchor and the first day of data). The 14 days
# before TRAIN_START fill the 14-day look-back features, so the first model trains on
# complete features only (training refuses days before DEMO_START + 14).
DEMO_START ?= 2025-12-18
# The first model trains on the history before DEMO_SERVE_FROM; from then on each day is
# served (replayed), ingested and monitored up to DEMO_END (exclusive).
DEMO_SERVE_FROM ?= 2026-01-17
DEMO_END ?= 2026-01-31
# A new fraud pattern arrives together with a shift in spending (amounts, online share);
# `make demo DEMO_DRIFT=` runs with no drift at all.
DEMO_DRIFT ?= new_fraud_pattern@2026-01-20 covariate_shift@2026-01-20
DEMO_ROWS ?= 4000
DEMO_FRAUD_RATE ?= 0.02
DEMO_PORT ?= 8765
# Training window of the first model: from the first day with complete look-back features.
TRAIN_START ?= 2026-01-01
TRAIN_TRIALS ?= 8
TRAIN_WORKERS ?= 2
MLFLOW_PORT ?= 5000
AIRFLOW_PORT ?= 8080
PG_PORT ?= 5433
# The demo compresses weeks into minutes: chargebacks count as mature after 3 days (not 7),
# one validation and one holdout day, the service polls aliases every second, 30% of
# users see the canary, and the canary analysis looks every 3 seconds.
DEMO_ENV = DRIFTLINE_DATA_START=$(DEMO_START) DRIFTLINE_SIMULATION_START=$(DEMO_START) DRIFTLINE_LABEL_MATURITY_DAYS=3 DRIFTLINE_VALID_DAYS=1 DRIFTLINE_HOLDOUT_DAYS=1 \
	DRIFTLINE_SERVE_POLL_SECONDS=1 DRIFTLINE_SERVE_CANARY_WEIGHT=0.3 DRIFTLINE_CANARY_POKE_SECONDS=3
DEMO_LOG = $(DRIFTLINE_HOME)/demo/demo.log

.PHONY: install promtool redis-server prod-deps demo demo-prod test test-fast test-scheduler test-prod lint bench bench-serving bench-rollback bench-validation airflow-init airflow-ui mlflow-ui dvc-repro clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# promtool (Debian's prometheus package) checks and unit-tests deploy/monitoring/alerts.yaml
# in `make test`; where apt cannot install it the promtool test is skipped, and says so.
promtool:
	@command -v promtool >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
		>/dev/null; } || echo "promtool not installed: the promtool alert-rule test is skipped" >&2

# redis-server (Debian's package) is the real Redis of the event-state tests in `make test`
# (tests/integration/test_events.py start one per module); where apt cannot install it
# the Redis cases are skipped, and say so.
redis-server:
	@command -v redis-server >/dev/null || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server \
		>/dev/null; } || echo "redis-server not installed: the Redis event-state tests are skipped" >&2

airflow-init: install
	mkdir -p $(AIRFLOW_HOME)
	$(BIN)/airflow db migrate > $(AIRFLOW_HOME)/db-migrate.log 2>&1
	$(BIN)/airflow dags reserialize > $(AIRFLOW_HOME)/reserialize.log 2>&1

# nginx and redis-server (Debian's packages) for the production profile (PostgreSQL and
# moto_server are already there: the scheduler tests and the Python environment).
prod-deps: redis-server
	@command -v nginx >/dev/null || test -x /usr/sbin/nginx || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx \
		>/dev/null; }

# The production profile's loop (make demo PROFILE=prod): the closed-loop test's scale
# (3000 rows a day, two trials on one worker), served from the day before the drift; the
# landing and canary sensors look every 20 s (at 3-5 s, Airflow 3.3's LocalExecutor raced
# reschedules: "finished with state success, but the task instance's state attribute is
# queued/running", a failed try; test-prod run 3 lost a canary verdict "promote" to it). The canary's p99 model latency may exceed the champion's by 60 ms, not 20:
# the replicas share two cores with Spark, training and the scheduler (a test-prod run
# rolled a better canary back at 30.4 ms vs 6.2 ms). KEEP=1 keeps every component up.
PROFILE ?= local
PROD_SERVE_FROM ?= 2026-01-18
PROD_END ?= 2026-01-27
PROD_DRIFT ?= new_fraud_pattern@2026-01-19 covariate_shift@2026-01-19
PROD_ROWS ?= 3000
PROD_ENV = $(DEMO_ENV) DRIFTLINE_RETRAIN_MIN_DRIFT_DAYS=2 DRIFTLINE_CANARY_MIN_REQUESTS=300 \
	DRIFTLINE_MAX_EPOCHS=6 DRIFTLINE_TUNING_TRIALS=2 DRIFTLINE_TUNING_WORKERS=1 \
	DRIFTLINE_LANDING_POKE_SECONDS=20 DRIFTLINE_CANARY_POKE_SECONDS=20 \
	DRIFTLINE_CANARY_LATENCY_SLACK_MS=60
PROD_LOG = $(DRIFTLINE_HOME)/prod/prod.log

## demo-prod (make demo PROFILE=prod): the loop on PostgreSQL, Redis, S3 (moto), an MLflow
## server, the Airflow scheduler and two replicas behind nginx, all on loopback, from a
## clean state; ends with the timeline and where each UI is. Full log: $(PROD_LOG).
demo-prod: install prod-deps
	rm -rf $(DRIFTLINE_HOME)
	mkdir -p $(dir $(PROD_LOG))
	set -o pipefail; env $(PROD_ENV) $(PY) scripts/prod_loop.py --start $(DEMO_START) \
		--serve-from $(PROD_SERVE_FROM) --end $(PROD_END) --train-start $(TRAIN_START) \
		$(foreach d,$(PROD_DRIFT),--drift $(d)) --rows $(PROD_ROWS) --trials 2 --workers 1 \
		$(if $(KEEP),--keep) 2>&1 | tee $(PROD_LOG) \
		| grep --line-buffered -E '^ *(==>|replay 2)' | sed -u 's/^ *//' \
		|| (tail -n 60 $(PROD_LOG); exit 1)
	sed -n '/======== timeline/,$$p' $(PROD_LOG)

ifeq ($(PROFILE),prod)
demo: demo-prod
else
## demo: the closed loop on a clean state (DRIFTLINE_HOME is emptied first): backfill the
## history through the ingest DAG, crown the first model with retrain_promote, serve and
## monitor day after day while a concept drift starts, retrain, canary, promote; ends with
## the timeline. Full log: $(DEMO_LOG).
demo: install
	rm -rf $(DRIFTLINE_HOME)
	$(MAKE) --no-print-directory airflow-init
	mkdir -p $(dir $(DEMO_LOG))
	set -o pipefail; env $(DEMO_ENV) $(PY) scripts/demo_loop.py --start $(DEMO_START) \
		--serve-from $(DEMO_SERVE_FROM) --end $(DEMO_END) --train-start $(TRAIN_START) \
		$(if $(strip $(DEMO_DRIFT)),$(foreach d,$(DEMO_DRIFT),--drift $(d)),--no-drift) --rows $(DEMO_ROWS) --fraud-rate $(DEMO_FRAUD_RATE) \
		--trials $(TRAIN_TRIALS) --workers $(TRAIN_WORKERS) --port $(DEMO_PORT) 2>&1 \
		| tee $(DEMO_LOG) | grep --line-buffered -E '^ *(==>|replay 2)' | sed -u 's/^ *//' \
		|| (tail -n 60 $(DEMO_LOG); exit 1)
	sed -n '/======== timeline/,$$p' $(DEMO_LOG)
endif

## test: the whole suite but the long scheduler runs (`make test-scheduler`); pytest's
## "no tests collected" (exit 5) is a failure.
test: install promtool redis-server
	$(PY) -m pytest -m "not scheduler and not prod" -n 3 --dist loadfile --no-loadscope-reorder \
		--durations=25; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

## test-fast: the tests that start no Spark, Airflow, KFP or demo loop (not marked `slow`),
## on two workers like `make test`; exit 5 is a failure here too.
test-fast: install redis-server
	$(PY) -m pytest -m "not slow and not scheduler and not prod" -n 2 --dist loadfile --no-loadscope-reorder \
		--durations=25; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

## test-scheduler: the DAGs under the real Airflow scheduler on PostgreSQL (REST
## backfills, reprocessing), marker `scheduler`; exit 5 is a failure here too.
test-scheduler: install
	$(PY) -m pytest -m scheduler; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

## test-prod: the production profile end to end (tests/e2e/test_prod_profile.py, marker
## prod): drift -> retrain -> canary -> promote across two replicas behind nginx.
test-prod: install prod-deps
	$(PY) -m pytest -m prod -n 0 -p no:randomly tests/e2e/test_prod_profile.py --durations=5; \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; exit $$rc

lint: install
	$(BIN)/ruff check src dags scripts tests bench feature_repo components pipelines
	$(BIN)/ruff format --check src dags scripts tests bench feature_repo components pipelines
	$(BIN)/mypy
	MYPYPATH=src:bench $(BIN)/mypy --strict --ignore-missing-imports bench
	$(BIN)/lint-imports

## bench: the feature-job benchmark, then the tuning benchmark on a training set built
## from the demo's lake, then scoring latency of the demo's champion against
## `mlflow models serve` (run `make demo` first).
bench: install
	$(PY) bench/features_bench.py
	$(BIN)/driftline training-set --start $(TRAIN_START) --end $(DEMO_END) \
		--out $(DRIFTLINE_HOME)/training_set > /dev/null
	$(PY) bench/tuning_bench.py --training-set $(DRIFTLINE_HOME)/training_set
	$(PY) bench/serving_bench.py
	$(PY) bench/rollback_bench.py

## bench-rollback: how long `driftline rollback` takes (about 2 minutes, no demo state
## needed): the fast registry path vs MLflowClient on SQLite and an mlflow server; writes
## bench/results/rollback.json (see bench/README.md).
bench-rollback: install
	$(PY) bench/rollback_bench.py

## bench-validation: one GX validation with the data docs views' compiled templates
## kept vs recompiled on every docs build (GX's views; about 1 minute, no demo state
## needed); writes bench/results/validation.json (see bench/README.md).
bench-validation: install
	$(PY) bench/validation_bench.py

## bench-serving: the serving benchmark alone (about 8 minutes, after make demo): driftline
## serve vs mlflow models serve of the champion, open loop at 1/4/16/64 in flight, a 60 s
## soak and the in-process overhead; writes bench/results/serving.json (see bench/README.md).
bench-serving: install
	$(PY) bench/serving_bench.py

## airflow-ui: the real scheduler profile until Ctrl-C: scheduler, DAG processor, triggerer
## and API server (UI + REST API on http://127.0.0.1:$(AIRFLOW_PORT)) with the LocalExecutor
## on a PostgreSQL metadata DB under $(DRIFTLINE_HOME)/postgres (port $(PG_PORT), created
## on first use), all bound to loopback, with the demo's settings (its lake, its first day
## of data). User admin, password in $(AIRFLOW_HOME)/simple_auth_manager_passwords.json.generated.
airflow-ui: install
	env $(DEMO_ENV) $(PY) scripts/airflow_stack.py --port $(AIRFLOW_PORT) --pg-port $(PG_PORT)

## mlflow-ui: the MLflow UI on http://localhost:$(MLFLOW_PORT) (runs, trials, registry).
mlflow-ui: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(DRIFTLINE_HOME)/mlflow/mlflow.db \
		--port $(MLFLOW_PORT)

dvc-repro: install
	$(BIN)/dvc repro

clean:
	rm -rf $(DRIFTLINE_HOME)
