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

from driftline.orchestration import assets, requests

RETRAIN_REQUESTS = Asset(assets.RETRAIN_REQUESTS)
ROLLOUTS = Asset(assets.ROLLOUTS)


def _canary_timing() -> tuple[float, float]:
    """(poke interval, timeout) of the canary sensor, from the settings."""
    from driftline.core.settings import get_settings

    cfg = get_settings()
    return cfg.canary_poke_seconds, cfg.canary_wait_seconds


@dag(
    dag_id="retrain_promote",
    schedule=[RETRAIN_REQUESTS],
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args={"owner": "driftline", "retries": 0},
    doc_md=__doc__,
    tags=["driftline", "training-plane", "serving"],
    params={name: Param(**spec) for name, spec in requests.retrain_params().items()},
)
def retrain_promote() -> None:
    """Wire: request -> train -> gate -> canary -> analysis -> promote or roll back."""

    @task
    def resolve_request(params=None, triggering_asset_events=None, run_id=None) -> dict[str, Any]:
        try:
            request = requests.retrain_request(params, triggering_asset_events, run_id)
        except requests.RequestError as error:
            raise AirflowFailException(str(error)) from error
        return request.to_dict()

    @task
    def train_candidate(request: dict[str, Any]) -> dict[str, Any]:
        from driftline.orchestration.training import run_training

        rollout = requests.RetrainRequest.from_dict(request)
        if rollout.candidate_version:
            return {"version": rollout.candidate_version, "trained": False}
        outcome = run_training(**rollout.training().to_dict())
        return {**outcome, "trained": True}

    @task
    def staging_gate(request: dict[str, Any], outcome: dict[str, Any]) -> dict[str, Any]:
        from driftline.core.settings import get_settings
        from driftline.orchestration.rollout import retrain_gate

        rollout = requests.RetrainRequest.from_dict(request)
        gate = retrain_gate(
            get_settings(),
            outcome["version"],
            actor=rollout.actor,
            day=rollout.day,
            context=rollout.gate_context(),
        )
        print(f"staging gate: {'passed' if gate.passed else 'FAILED'}: {gate.reason}")
        if not gate.passed:
            raise AirflowFailException(f"version {gate.version} rejected: {gate.reason}")
        return gate.to_dict()

    @task
    def start_canary(request: dict[str, Any], gate: dict[str, Any]) -> dict[str, Any]:
        from driftline.core.settings import get_settings
        from driftline.lifecycle.gates import GateResult
        from driftline.orchestration.rollout import begin_canary

        rollout = requests.RetrainRequest.from_dict(request)
        canary = begin_canary(
            get_settings(), GateResult.from_dict(gate), actor=rollout.actor, day=rollout.day
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
        rollout = requests.RetrainRequest.from_dict(request)
        transition = conclude_canary(
            get_settings(), canary, report, actor=rollout.actor, day=rollout.day
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
