"""
### ingest_validate_materialize

Daily data plane of driftline. For its data interval (one UTC day):

1. **wait_for_landing** (sensor, reschedule mode): waits until the day's landing files of
   transactions and chargeback labels are there, checking every few minutes without
   holding a worker slot; a day still missing after the timeout fails the run once,
   naming the missing files (late data is not retried as if it were wrong);
2. **ingest** the landing files into staging;
3. **validate** each batch with its Great Expectations suite: a passing batch becomes the
   raw partition `dt=YYYY-MM-DD` (replaced atomically), a failing one is quarantined with
   its validation result and the run fails here (no retry: the data will not fix itself);
4. **record events**: the day's validated transactions seed the online event state of
   the fresh features (`driftline.data.events.record_interval`; idempotent: a
   transaction id is recorded once however often the day reruns);
5. **build features** with PySpark over the interval and its look-back partitions,
   validated by the `features` suite, then the fresh features of each transaction as
   of just before it (`features/fresh`); a missing or unvalidated look-back day (after
   the declared first day of data, `DRIFTLINE_DATA_START`) fails the task and names the
   days;
6. **materialize** exactly this interval into the Feast online store (a rerun of a day
   rewrites that day's values; an older interval never overwrites newer ones), then
   announce the day on the asset `driftline://lake/features` (`extra.day`), which
   `monitor_drift` is scheduled on.

#### Scheduling model: history is loaded by backfills, features run in day order

- **`catchup=False`.** Unpausing starts only the run of the latest interval (which waits
  for its landing files), never one run per day since `start_date`: catch-up runs would
  race a backfill, because `max_active_runs` is counted separately for scheduled and
  backfill runs.
- **Backfills are the way to load or reprocess history** (UI: *Trigger -> Backfill*;
  REST: `POST /api/v2/backfills`; CLI: `airflow backfill create`). Airflow allows one
  active backfill per DAG, so backfills of overlapping ranges run one after the other,
  each oldest day first (backfilling backwards is refused because of the next point).
- **`depends_on_past=True` on `build_features`.** A day's features read the raw
  partitions of the days before it, so its feature task starts only after the previous
  day's feature task succeeded. This holds whatever creates the runs (scheduler,
  backfill, manual, cleared reruns) and however many run at once: a reprocessing
  backfill clears every day first, and each day's features still wait for the day
  before. A failed day holds the following days' features until it is fixed and rerun.
  Because of it Airflow asks every backfill for a reprocess behaviour: `failed` (load
  missing days, rerun failed ones) or `completed` (rerun everything in the range).
- **`max_active_runs=1`** keeps one day at a time; it is a resource limit, not what makes
  the data right (the two points above are). A backfill takes its own
  `max_active_runs` (REST default 10, not the DAG's): pass `"max_active_runs": 1` in
  `POST /api/v2/backfills` (and in the UI form, or `airflow backfill create
  --max-active-runs 1`).

Every task calls one `driftline` function with the run's explicit data interval; reruns
are idempotent.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

from driftline.orchestration import assets, requests

INGESTED_DAYS = Asset(assets.INGESTED_DAYS)

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


def _landing_timing() -> tuple[float, float]:
    """(poke interval, timeout) of the landing sensor."""
    from driftline.orchestration.landing import POKE_SECONDS, WAIT_SECONDS

    return POKE_SECONDS, WAIT_SECONDS


def _interval(start: datetime | None, end: datetime | None) -> Any:
    """The run's data interval as a driftline ``Interval`` (none fails the task)."""
    return _gate(lambda: requests.data_interval(start, end))


@dag(
    dag_id="ingest_validate_materialize",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    # Before every day a run is made for (the demo's history starts 2025-12-18): a
    # dag.test run for a day before start_date is moved to the first interval after it.
    start_date=datetime(2025, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    doc_md=__doc__,
    tags=["driftline", "data-plane"],
    params={name: Param(**spec) for name, spec in requests.ingest_params().items()},
)
def ingest_validate_materialize() -> None:
    """Wire ingest -> validate -> record events -> features -> materialize for one interval."""

    poke_seconds, wait_seconds = _landing_timing()

    @task.sensor(poke_interval=poke_seconds, timeout=wait_seconds, mode="reschedule")
    def wait_for_landing(data_interval_start=None, data_interval_end=None) -> bool:
        from driftline.orchestration.landing import landing_status

        status = landing_status(_interval(data_interval_start, data_interval_end))
        print(status.describe())
        return status.ready

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

    # Seeds the fresh features' online event state from the day's good transactions.
    @task
    def record_events(data_interval_start=None, data_interval_end=None) -> int:
        from driftline.core.settings import get_settings
        from driftline.data.events import record_interval

        interval = _interval(data_interval_start, data_interval_end)
        return _gate(lambda: record_interval(get_settings(), interval))

    # The features of a day read the raw days before it: never before the previous
    # day's features succeeded, whichever runs exist at the same time.
    @task(depends_on_past=True)
    def build_features(
        data_interval_start=None, data_interval_end=None
    ) -> dict[str, dict[str, int]]:
        from driftline.data.features import build_features as run

        interval = _interval(data_interval_start, data_interval_end)
        result = _gate(lambda: run(interval))
        return {"rows": result.rows, "fresh_rows": result.fresh_rows}

    @task(outlets=[INGESTED_DAYS])
    def materialize_features(
        params=None, data_interval_start=None, data_interval_end=None, outlet_events=None
    ) -> dict[str, int]:
        from driftline.data.feast import materialize_interval

        interval = _interval(data_interval_start, data_interval_end)
        written: dict[str, int] = {}
        if _gate(lambda: requests.ingest_options(params)).materialize:
            written = materialize_interval(interval).written
        if outlet_events is not None:
            outlet_events[INGESTED_DAYS].extra = requests.ingested_day_extra(interval)
        return written

    landed = wait_for_landing()
    published = [
        landed
        >> ingest_batch.override(task_id=f"ingest_{dataset}")(dataset)
        >> validate_batch.override(task_id=f"validate_{dataset}")(dataset)
        for dataset in ("transactions", "labels")
    ]
    recorded = published[0] >> record_events()
    [*published, recorded] >> build_features() >> materialize_features()


ingest_validate_materialize()
