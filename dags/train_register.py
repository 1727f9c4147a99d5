"""
### train_register

Trains a fraud model with the Kubeflow pipeline `train-pipeline` and registers it in
MLflow. The pipeline builds a point-in-time training set from Feast for the window,
tunes with Optuna (N workers on one study), trains the best configuration, evaluates
it against the current champion on the recent holdout, and registers the version with
its lineage. The version gets the alias `staging` only when the gates pass.

**Trigger** it by hand with the params below (window, trials, workers), from another
DAG, or with an event on the asset `driftline://training/requests` whose `extra`
holds `window_start` / `window_end`. With `DRIFTLINE_KFP_HOST` set the same pipeline
runs on the Kubeflow cluster; otherwise on the KFP local runner.

Each DAG run is one training request (`airflow-<run id>`): clearing a failed task
resumes the same Optuna study and MLflow run instead of starting over. The run's XCom
holds the registered version and the gate result; a registered version is announced on
the asset `driftline://models/staging-candidates`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

TRAINING_REQUESTS = Asset("driftline://training/requests")
CANDIDATES = Asset("driftline://models/staging-candidates")


def _window_from_events(events: Any) -> dict[str, str]:
    """The newest training-request event's window (empty when not asset-triggered)."""
    for asset_events in (events or {}).values():
        for event in reversed(list(asset_events)):
            extra = event.extra or {}
            if extra.get("window_start") and extra.get("window_end"):
                return {"window_start": extra["window_start"], "window_end": extra["window_end"]}
    return {}


@dag(
    dag_id="train_register",
    schedule=[TRAINING_REQUESTS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "driftline", "retries": 0},
    doc_md=__doc__,
    tags=["driftline", "training-plane"],
    params={
        "window_start": Param("", type="string", description="First day (YYYY-MM-DD)."),
        "window_end": Param("", type="string", description="Label cut-off, exclusive."),
        "trials": Param(8, type="integer", minimum=1, description="Optuna trials."),
        "workers": Param(2, type="integer", minimum=1, maximum=16, description="Tuners."),
    },
)
def train_register() -> None:
    """Wire: resolve the request -> run the training pipeline (and wait)."""

    @task
    def resolve_request(params=None, triggering_asset_events=None, run_id=None) -> dict[str, Any]:
        window = _window_from_events(triggering_asset_events) or {
            "window_start": (params or {}).get("window_start", ""),
            "window_end": (params or {}).get("window_end", ""),
        }
        if not (window["window_start"] and window["window_end"]):
            raise AirflowFailException(
                "no training window: set params window_start/window_end or send a "
                "driftline://training/requests event with them in its extra"
            )
        return {
            **window,
            "trials": int((params or {}).get("trials", 8)),
            "workers": int((params or {}).get("workers", 2)),
            "airflow_run_id": run_id or "",
            # One training request per DAG run: a retried task resumes its study.
            "request_id": f"airflow-{run_id}" if run_id else "",
        }

    @task(outlets=[CANDIDATES])
    def run_training_pipeline(request: dict[str, Any], outlet_events=None) -> dict[str, Any]:
        from driftline.orchestration.training import run_training

        outcome = run_training(
            request["window_start"],
            request["window_end"],
            trials=request["trials"],
            workers=request["workers"],
            request_id=request["request_id"],
            airflow_run_id=request["airflow_run_id"],
        )
        if outlet_events is not None:
            outlet_events[CANDIDATES].extra = {
                "version": outcome["version"],
                "gate_passed": outcome["gate_passed"],
            }
        return outcome

    run_training_pipeline(resolve_request())


train_register()
