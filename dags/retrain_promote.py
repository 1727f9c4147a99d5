"""
### retrain_promote

Retrains the fraud model when drift asks for it and rolls the new version out safely:

1. **resolve_request**: the window comes from the `driftline://drift/retrain-requests`
   event `monitor_drift` emitted (drift window, training window, drift report), or from
   the params of a manual run. A manual run may name `candidate_version` instead, to roll
   out a version that is already registered.
2. **train_candidate**: the Kubeflow pipeline `train-pipeline` (KFP local runner, or the
   cluster with `DRIFTLINE_KFP_HOST`) tunes, trains, evaluates the candidate and the
   champion on the same most recent labelled days, and registers the candidate.
3. **staging_gate**: the candidate must hold `staging` and beat the champion there;
   otherwise the run fails here and the champion is untouched.
4. **start_canary**: alias `canary` at `serve_canary_weight` (the scoring service polls
   it); the first model ever becomes `champion` directly.
5. **canary_analysis** (sensor, reschedule mode): waits until `canary_min_requests`
   transactions were routed to the canary, then compares error rate, p99 model latency,
   score shift and (where chargebacks arrived) PR-AUC with the champion on the same days.
6. **promote_or_rollback**: `champion` moves (the old one is recorded for
   `driftline rollback`) or `canary` is removed. No verdict in time is a rollback. The
   outcome is announced on the asset `driftline://models/rollouts`.

Every decision is tagged on the model version (`decision.*`, with reasons and numbers)
and printed in the task log.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import Asset, Param, PokeReturnValue, dag, task
from airflow.sdk.exceptions import AirflowFailException

RETRAIN_REQUESTS = Asset("driftline://drift/retrain-requests")
ROLLOUTS = Asset("driftline://models/rollouts")
REQUEST_KEYS = ("window_start", "window_end", "drift_start", "drift_day", "reason", "drift_report")


def _request_from_events(events: Any) -> dict[str, str]:
    """The newest retrain-request event's extra (empty when not asset-triggered)."""
    for asset_events in (events or {}).values():
        for event in reversed(list(asset_events)):
            extra = event.extra or {}
            if extra.get("window_start") and extra.get("window_end"):
                return {key: str(extra.get(key, "")) for key in REQUEST_KEYS}
    return {}


def _canary_timing() -> tuple[float, float]:
    """(poke interval, timeout) of the canary sensor, from the settings."""
    from driftline.core.settings import get_settings

    cfg = get_settings()
    return cfg.canary_poke_seconds, cfg.canary_wait_seconds


def _day(request: dict[str, Any]) -> Any:
    from datetime import date

    return date.fromisoformat(request["window_end"])


def _actor(request: dict[str, Any]) -> str:
    return f"airflow:retrain_promote:{request['airflow_run_id']}"


@dag(
    dag_id="retrain_promote",
    schedule=[RETRAIN_REQUESTS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "driftline", "retries": 0},
    doc_md=__doc__,
    tags=["driftline", "training-plane", "serving"],
    params={
        "window_start": Param("", type="string", description="First training day."),
        "window_end": Param(
            "",
            type="string",
            description="Label cut-off (exclusive); traffic from this day on is canary evidence.",
        ),
        "candidate_version": Param(
            "", type="string", description="Skip training: roll out this registered version."
        ),
        "trials": Param(8, type="integer", minimum=1, description="Optuna trials."),
        "workers": Param(2, type="integer", minimum=1, maximum=16, description="Tuners."),
    },
)
def retrain_promote() -> None:
    """Wire: request -> train -> gate -> canary -> analysis -> promote or roll back."""

    @task
    def resolve_request(params=None, triggering_asset_events=None, run_id=None) -> dict[str, Any]:
        given = params or {}
        request = _request_from_events(triggering_asset_events) or {
            key: str(given.get(key, "")) for key in REQUEST_KEYS
        }
        if not request["window_end"]:
            raise AirflowFailException(
                "no window: set params window_start/window_end (or candidate_version and "
                "window_end) or send a driftline://drift/retrain-requests event"
            )
        candidate = str(given.get("candidate_version", ""))
        if not candidate and not request["window_start"]:
            raise AirflowFailException("training needs window_start as well as window_end")
        return {
            **request,
            "candidate_version": candidate,
            "trials": int(given.get("trials", 8)),
            "workers": int(given.get("workers", 2)),
            "airflow_run_id": run_id or "",
            "request_id": f"airflow-{run_id}" if run_id else "",
        }

    @task
    def train_candidate(request: dict[str, Any]) -> dict[str, Any]:
        from driftline.orchestration.training import run_training

        if request["candidate_version"]:
            return {"version": request["candidate_version"], "trained": False}
        outcome = run_training(
            request["window_start"],
            request["window_end"],
            trials=request["trials"],
            workers=request["workers"],
            request_id=request["request_id"],
            airflow_run_id=request["airflow_run_id"],
        )
        return {**outcome, "trained": True}

    @task
    def staging_gate(request: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
        from driftline.core.settings import get_settings
        from driftline.orchestration.rollout import retrain_gate

        context = {
            f"retrain.{key}": request[key]
            for key in ("drift_start", "drift_day", "reason", "drift_report", "window_start")
            if request.get(key)
        }
        gate = retrain_gate(
            get_settings(),
            outcome["version"],
            actor=_actor(request),
            day=_day(request),
            context={**context, "retrain.window_end": request["window_end"]},
        )
        print(f"staging gate: {'passed' if gate.passed else 'FAILED'}: {gate.reason}")
        if not gate.passed:
            raise AirflowFailException(f"version {gate.version} rejected: {gate.reason}")
        return gate.to_dict()

    @task
    def start_canary(request: dict[str, Any], gate: dict[str, Any]) -> dict[str, Any]:
        from driftline.core.settings import get_settings
        from driftline.orchestration.rollout import GateResult, begin_canary

        canary = begin_canary(
            get_settings(), GateResult(**gate), actor=_actor(request), day=_day(request)
        )
        print(f"rollout: {canary}")
        return canary

    poke_seconds, wait_seconds = _canary_timing()

    @task.sensor(
        poke_interval=poke_seconds,
        timeout=wait_seconds,
        mode="reschedule",
        soft_fail=True,
    )
    def canary_analysis(canary: dict[str, Any]) -> PokeReturnValue:
        from driftline.core.settings import get_settings
        from driftline.orchestration.rollout import canary_evidence

        if canary["mode"] != "canary":
            return PokeReturnValue(is_done=True, xcom_value=None)
        report = canary_evidence(get_settings(), canary)
        print(f"canary analysis: {report.verdict}: {report.reason}")
        done = report.verdict != "wait"
        return PokeReturnValue(is_done=done, xcom_value=report.to_dict() if done else None)

    @task(trigger_rule="none_failed", outlets=[ROLLOUTS])
    def promote_or_rollback(
        request: dict[str, Any], canary: dict[str, Any], ti=None, outlet_events=None
    ) -> dict[str, Any]:
        from driftline.core.settings import get_settings
        from driftline.orchestration.rollout import conclude_canary

        # No report when the sensor timed out (soft fail: skipped): that is a rollback.
        report = ti.xcom_pull(task_ids="canary_analysis") if ti is not None else None
        transition = conclude_canary(
            get_settings(), canary, report, actor=_actor(request), day=_day(request)
        )
        if outlet_events is not None:
            outlet_events[ROLLOUTS].extra = transition
        print(f"decision: {transition}")
        return transition

    request = resolve_request()
    gate = staging_gate(request, train_candidate(request))
    canary = start_canary(request, gate)
    canary_analysis(canary) >> promote_or_rollback(request, canary)


retrain_promote()
