"""
### monitor_drift

Drift monitoring of the scoring service, **ordered by data, not by the clock**: it is
scheduled on the asset `driftline://lake/features`, which `ingest_validate_materialize`
announces once per day whose ingest succeeded (`extra.day`). So a day is monitored only
after its chargebacks landed, and a day without data is never monitored. Events that
queued up while a run was busy (a backfill ingests days faster) start one run that
checks each of their days, oldest first. A manual run names its `day` in the form.

1. **check_drift**: for each day, Evidently compares the day's served traffic (the
   prediction log) with the champion's drift reference (its training data, scored by
   it): data drift of the model inputs and prediction drift (PSI) of the scores. Labels
   arrive late, so the champion's served scores on the *matured* days
   (`label_maturity_days` earlier) are judged against the chargebacks known by now
   (performance drift). The HTML report and `drift.json` are kept per day under
   `{lake}/monitoring/reports/dt=DAY/`; the result goes into the drift log (in the lake).
   The day's served fresh features are compared with the offline ones (one line in
   the task log; below `consistency_min_share` it is flagged, never a failure).
2. **should_retrain**: the trigger policy (debounce, cool-down, and waiting until labels
   of the drift exist) decides, on the newest checked day that asks for a retrain, else
   the newest day; most days it says no and the rest of the run is skipped.
3. **request_retrain**: emits one event on the asset `driftline://drift/retrain-requests`
   with the drift window, the training window and the report in its `extra`;
   `retrain_promote` is scheduled on that asset. The trigger is recorded after the event,
   so drift lasting many days starts one retrain, and a rerun or backfill of an older day
   never triggers again.

Backfilling the ingest DAG re-announces its days, so they are monitored again; reruns
replace the day's result. Every task calls one `driftline` function with the day.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Asset, Param, dag, task
from airflow.sdk.exceptions import AirflowFailException

from driftline.orchestration import assets, requests

INGESTED_DAYS = Asset(assets.INGESTED_DAYS)
RETRAIN_REQUESTS = Asset(assets.RETRAIN_REQUESTS)


@dag(
    dag_id="monitor_drift",
    schedule=[INGESTED_DAYS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "driftline", "retries": 1},
    doc_md=__doc__,
    tags=["driftline", "monitoring"],
    params={name: Param(**spec) for name, spec in requests.monitor_params().items()},
)
def monitor_drift() -> None:
    """Wire: check drift -> decide -> request a retrain (only when the policy says so)."""

    @task
    def check_drift(
        params=None,
        triggering_asset_events=None,
        data_interval_start=None,
        data_interval_end=None,
    ) -> dict[str, Any]:
        from driftline.core.interval import Interval
        from driftline.core.settings import get_settings
        from driftline.monitoring.steps import check_interval

        try:
            days = requests.monitor_days(
                params, triggering_asset_events, data_interval_start, data_interval_end
            )
        except requests.RequestError as error:
            raise AirflowFailException(str(error)) from error
        cfg = get_settings()
        checks = [check_interval(Interval.for_day(day), cfg) for day in days]
        for check in checks:
            print(f"{check['day']}: {check['decision']['reason']}")
            consistency = (check.get("drift") or {}).get("consistency") or {}
            if consistency.get("line"):
                print(consistency["line"])
        asking = [check for check in checks if check["decision"]["trigger"]]
        return {**(asking or checks)[-1], "checked": [day.isoformat() for day in days]}

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
