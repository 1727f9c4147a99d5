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

from driftline.orchestration import assets, requests

TRAINING_REQUESTS = Asset(assets.TRAINING_REQUESTS)
CANDIDATES = Asset(assets.STAGING_CANDIDATES)


@dag(
    dag_id="train_register",
    schedule=[TRAINING_REQUESTS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "driftline", "retries": 0},
    doc_md=__doc__,
    tags=["driftline", "training-plane"],
    params={name: Param(**spec) for name, spec in requests.training_params().items()},
)
def train_register() -> None:
    """Wire: resolve the request -> run the training pipeline (and wait)."""

    @task
    def resolve_request(params=None, triggering_asset_events=None, run_id=None) -> dict[str, Any]:
        try:
            request = requests.training_request(params, triggering_asset_events, run_id)
        except requests.RequestError as error:
            raise AirflowFailException(str(error)) from error
        return request.to_dict()

    @task(outlets=[CANDIDATES])
    def run_training_pipeline(request: dict[str, Any], outlet_events=None) -> dict[str, Any]:
        from driftline.orchestration.training import run_training

        outcome = run_training(**requests.TrainingRequest.from_dict(request).to_dict())
        if outlet_events is not None:
            outlet_events[CANDIDATES].extra = {
                "version": outcome["version"],
                "gate_passed": outcome["gate_passed"],
            }
        return outcome

    run_training_pipeline(resolve_request())


train_register()
