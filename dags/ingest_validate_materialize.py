"""
### ingest_validate_materialize

Daily data plane of driftline. For its data interval (one UTC day):

1. **ingest** the landing files of transactions and chargeback labels into staging;
2. **validate** each batch with its Great Expectations suite: a passing batch becomes the
   raw partition `dt=YYYY-MM-DD` (replaced atomically), a failing one is quarantined with
   its validation result and the run fails here (no retry: the data will not fix itself);
3. **build features** with PySpark over the interval and its look-back partitions,
   validated by the `features` suite;
4. **materialize** exactly this interval into the Feast online store (older intervals
   never overwrite newer online values, so backfills in any order are safe).

Backfill any range from the UI or `airflow backfill create`; reruns are idempotent.
Every task calls one `driftline` function with the run's explicit data interval.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

from driftline.orchestration import requests

DEFAULT_ARGS: dict[str, Any] = {
    "owner": "driftline",
    "retries": 2,
    "retry_delay": timedelta(minutes=2),
}


def _gate(call: Any) -> Any:
    """Run a driftline stage; a rejected batch or request fails the task without retries."""
    from driftline.data.ingest import BatchQuarantined

    try:
        return call()
    except (BatchQuarantined, requests.RequestError) as rejected:
        raise AirflowFailException(str(rejected)) from rejected


def _interval(start: datetime | None, end: datetime | None) -> Any:
    """The run's data interval as a driftline ``Interval`` (none fails the task)."""
    return _gate(lambda: requests.data_interval(start, end))


@dag(
    dag_id="ingest_validate_materialize",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=True,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["driftline", "data-plane"],
    params={name: Param(**spec) for name, spec in requests.ingest_params().items()},
)
def ingest_validate_materialize() -> None:
    """Wire ingest -> validate -> features -> materialize for one data interval."""

    @task
    def ingest_batch(dataset: str, data_interval_start=None, data_interval_end=None) -> int:
        from driftline.data.ingest import ingest

        interval = _interval(data_interval_start, data_interval_end)
        return _gate(lambda: ingest(dataset, interval)).total

    @task
    def validate_batch(dataset: str, data_interval_start=None, data_interval_end=None) -> int:
        from driftline.data.ingest import publish_validated

        interval = _interval(data_interval_start, data_interval_end)
        return _gate(lambda: publish_validated(dataset, interval)).total

    @task
    def build_features(data_interval_start=None, data_interval_end=None) -> dict[str, int]:
        from driftline.data.features import build_features as run

        interval = _interval(data_interval_start, data_interval_end)
        return _gate(lambda: run(interval)).rows

    @task
    def materialize_features(
        params=None, data_interval_start=None, data_interval_end=None
    ) -> dict[str, int]:
        from driftline.data.feast import materialize_interval

        if not _gate(lambda: requests.ingest_options(params)).materialize:
            return {}
        return materialize_interval(_interval(data_interval_start, data_interval_end)).written

    published = [
        ingest_batch.override(task_id=f"ingest_{dataset}")(dataset)
        >> validate_batch.override(task_id=f"validate_{dataset}")(dataset)
        for dataset in ("transactions", "labels")
    ]
    published >> build_features() >> materialize_features()


ingest_validate_materialize()
