"""Every Airflow asset the driftline DAGs produce or consume, by URI, in one place.

Plain strings: the DAG files wrap them in ``airflow.sdk.Asset`` and everything else
(scripts, the demo, tests, Airflow's asset tables) matches events by these URIs. The
module imports nothing, so a DAG file may import it at parse time.
"""

from __future__ import annotations

#: A request to train a candidate: ``train_register`` is scheduled on it; the event's
#: ``extra`` holds ``window_start`` and ``window_end``.
TRAINING_REQUESTS = "driftline://training/requests"

#: A version ``train_register`` registered; ``extra``: ``version``, ``gate_passed``.
STAGING_CANDIDATES = "driftline://models/staging-candidates"

#: A retrain the drift policy asks for: ``monitor_drift`` emits it, ``retrain_promote`` is
#: scheduled on it; ``extra``: the training window, the drift window and the report.
RETRAIN_REQUESTS = "driftline://drift/retrain-requests"

#: The outcome of a rollout (promotion or rollback), emitted by ``retrain_promote``.
ROLLOUTS = "driftline://models/rollouts"

#: A day whose ingest succeeded (landed, validated, features built, materialized):
#: ``ingest_validate_materialize`` emits one event per run, ``monitor_drift`` is scheduled
#: on it; ``extra``: ``day`` (``YYYY-MM-DD``, the run's data interval).
INGESTED_DAYS = "driftline://lake/features"
