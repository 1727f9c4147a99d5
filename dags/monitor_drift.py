"""
### monitor_drift

Daily drift monitoring of the scoring service. For its data interval (one UTC day, run
after `ingest_validate_materialize` has landed that day's chargebacks):

1. **check_drift**: Evidently compares the day's served traffic (the prediction log) with
   the champion's drift reference (its training data, scored by it): data drift of the
   model inputs and prediction drift (PSI) of the scores. Labels arrive late, so the
   champion's served scores on the *matured* days (`label_maturity_days` earlier) are
   judged against the chargebacks known by now (performance drift). The HTML report and
   `drift.json` are kept per day under `$DRIFTLINE_HOME/monitoring/reports/dt=DAY/`; the
   result goes into the drift log.
2. **should_retrain**: the trigger policy (debounce, cool-down, and waiting until labels of
   the drift exist) decides; most days it says no and the rest of the run is skipped.
3. **request_retrain**: emits one event on the asset `driftline://drift/retrain-requests`
   with the drift window, the training window and the report in its `extra`;
   `retrain_promote` is scheduled on that asset. The trigger is recorded after the event,
   so drift lasting many days starts one retrain, and a rerun or backfill of an older day
   never triggers again.

Backfill any range from the UI or `airflow backfill create`; reruns replace the day's
result. Every task calls one `driftline` function with the run's data interval.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Asset, CronDataIntervalTimetable, dag, task
from airflow.sdk.exceptions import AirflowFailException

from driftline.orchestration import assets, requests

RETRAIN_REQUESTS = Asset(assets.RETRAIN_REQUESTS)


@dag(
    dag_id="monitor_drift",
    schedule=CronDataIntervalTimetable("0 0 * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "driftline", "retries": 1},
    doc_md=__doc__,
    tags=["driftline", "monitoring"],
)
def monitor_drift() -> None:
    """Wire: check drift -> decide -> request a retrain (only when the policy says so)."""

    @task
    def check_drift(data_interval_start=None, data_interval_end=None) -> dict[str, Any]:
        from driftline.core.settings import get_settings
        from driftline.monitoring.steps import check_interval

        try:
            interval = requests.data_interval(data_interval_start, data_interval_end)
        except requests.RequestError as error:
            raise AirflowFailException(str(error)) from error
        return check_interval(interval, get_settings())

    @task.short_circuit
    def should_retrain(check: dict[str, Any]) -> bool:
        print(f"decision: {check['decision']['reason']}")
        return bool(check["decision"]["trigger"])

    @task(outlets=[RETRAIN_REQUESTS])
    def request_retrain(check: dict[str, Any], outlet_events=None) -> dict[str, str]:
        from datetime import date

        from driftline.core.settings import get_settings
        from driftline.monitoring.steps import record_trigger, retrain_request

        cfg = get_settings()
        request = retrain_request(check, cfg)
        if outlet_events is not None:
            outlet_events[RETRAIN_REQUESTS].extra = request
        record_trigger(date.fromisoformat(check["day"]), check["decision"], cfg)
        print(f"retrain requested: {request}")
        return request

    checked = check_drift()
    should_retrain(checked) >> request_retrain(checked)


monitor_drift()
