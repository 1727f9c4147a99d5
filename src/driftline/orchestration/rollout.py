"""Rolling a retrained model out: staging gate -> canary -> promote or roll back.

The ``retrain_promote`` DAG calls these in order after the training pipeline registered a
candidate:

1. :func:`retrain_gate` -- :func:`driftline.lifecycle.gates.retrain_gate` (the rule:
   the registration gates passed, and the candidate beats the current champion on the
   most recent labelled days by more than ``retrain_min_improvement``), recorded.
2. :func:`begin_canary` -- ``canary`` alias on the candidate at ``serve_canary_weight``,
   written as the registry's canary control that every scoring replica routes by; with
   no champion at all the candidate becomes the first champion directly (there is
   nothing to compare a canary with).
3. :func:`canary_evidence` -- the canary analysis of the traffic served since the canary
   started (:mod:`driftline.monitoring.canary`), repeated until it is not ``wait``.
4. :func:`conclude_canary` -- ``promote`` (the previous champion is recorded for a
   one-step rollback) or ``abort_canary`` (the champion keeps serving); both clear the
   canary control.

Every decision is written as ``decision.*`` tags on the version (reason, numbers, actor,
data day) and logged. Times are the request's data day, never the wall clock.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime
from typing import Any

from driftline.core.settings import Settings
from driftline.lifecycle import gates, promotion, registry
from driftline.lifecycle.gates import GateResult
from driftline.monitoring import canary_labels
from driftline.monitoring.canary import CanaryReport, analyse_canary, read_shadow
from driftline.monitoring.served import logged_days, read_served, reported_frauds

log = logging.getLogger(__name__)


def _day_time(day: date) -> datetime:
    """Midnight UTC of a data day: the time recorded on decisions."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def retrain_gate(
    settings: Settings,
    version: str,
    *,
    actor: str,
    day: date,
    context: dict[str, str] | None = None,
) -> GateResult:
    """Judge the candidate ``version`` for canary and record the verdict on it.

    The rule is :func:`driftline.lifecycle.gates.retrain_gate`, applied to the version's
    tags and the current champion. ``context`` (e.g. the drift window and report that
    caused the retrain) is written as version tags alongside the verdict.
    """
    if context:
        registry.tag_version(settings, str(version), context)
    details = registry.client(settings).get_model_version(settings.model_name, str(version))
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    result = gates.retrain_gate(
        str(version),
        dict(details.tags or {}),
        None if champion is None else str(champion.version),
        settings,
    )
    drift_start = (context or {}).get("retrain.drift_start")
    if result.passed and champion is not None and drift_start:
        result = _with_regime_gate(
            settings, result, str(champion.version), date.fromisoformat(drift_start), day
        )
    promotion.record_decision(
        settings,
        str(version),
        "retrain_gate",
        ("passed: " if result.passed else "failed: ") + result.reason,
        actor,
        result.metrics,
        _day_time(day),
    )
    log.info("retrain gate for version %s: %s", version, result.reason)
    return result


def _with_regime_gate(
    settings: Settings, result: GateResult, champion: str, drift_start: date, cutoff: date
) -> GateResult:
    """``result`` (passed) combined with :func:`driftline.lifecycle.gates.regime_gate`:
    a retrain caused by drift must also win on the post-drift labelled days."""
    from driftline.monitoring.regime import regime_evidence

    evidence = regime_evidence(
        settings,
        candidate=str(result.version),
        champion=champion,
        drift_start=drift_start,
        cutoff=cutoff,
    )
    regime = gates.regime_gate(evidence, settings)
    return GateResult(
        regime.passed,
        [*result.reasons, *regime.reasons],
        {**result.metrics, **regime.metrics},
        result.version,
        result.champion,
    )


def begin_canary(settings: Settings, gate: GateResult, *, actor: str, day: date) -> dict[str, Any]:
    """Start the canary of a gated candidate (or crown it when there is no champion).

    Returns:
        ``version``, ``champion`` and ``mode`` (``canary`` or ``first_champion``), and
        ``since``: the first data day whose traffic is canary evidence.
    """
    if not gate.passed or gate.version is None:
        raise promotion.PromotionError(f"version {gate.version} did not pass the gate")
    now = _day_time(day)
    out = {"version": gate.version, "champion": gate.champion, "since": day.isoformat()}
    promotion.start_canary(
        settings,
        gate.version,
        weight=settings.serve_canary_weight if gate.champion else 0.0,
        reason=gate.reason,
        actor=actor,
        now=now,
    )
    if gate.champion is None:
        promotion.promote(
            settings, reason="first champion: nothing to canary against", actor=actor, now=now
        )
        return {**out, "mode": "first_champion"}
    return {**out, "mode": "canary"}


def canary_evidence(settings: Settings, canary: dict[str, Any]) -> CanaryReport:
    """Analyse the traffic served since ``canary["since"]`` (see :func:`begin_canary`).

    Labels are the chargebacks reported from that day up to the newest served day.
    """
    days = logged_days(settings, since=date.fromisoformat(canary["since"]))
    served = read_served(settings, days)
    frauds = reported_frauds(settings, days[0], days[-1]) if days else set()
    details = registry.client(settings).get_model_version(settings.model_name, canary["version"])
    report = analyse_canary(
        served,
        canary_version=canary["version"],
        champion_version=str(canary["champion"]),
        settings=settings,
        frauds=frauds,
        expected_psi=registry.float_tag(details.tags or {}, "candidate.score_psi_vs_champion"),
        shadow=read_shadow(settings, days),
    )
    log.info("canary %s: %s (%s)", canary["version"], report.verdict, report.reason)
    return report


def conclude_canary(
    settings: Settings,
    canary: dict[str, Any],
    report: dict[str, Any] | None,
    *,
    actor: str,
    day: date,
) -> dict[str, Any]:
    """Promote the canary or roll it back, according to ``report`` (a report dict).

    A missing report (the wait for traffic timed out) or any verdict but ``promote``
    rolls the canary back. Returns the transition as a dict.
    """
    if canary["mode"] == "first_champion":
        return {"action": "promote", "version": canary["version"], "reason": "first champion"}
    now = _day_time(day)
    if report is None:
        transition = promotion.abort_canary(
            settings,
            reason=f"no canary verdict within {settings.canary_wait_seconds:.0f} s "
            f"(fewer than {settings.canary_min_requests} requests routed to it)",
            actor=actor,
            now=now,
        )
        return transition.to_dict()
    metrics = CanaryReport(**report).metrics()
    reason = "; ".join(report["reasons"])
    if report["verdict"] == "promote":
        transition = promotion.promote(
            settings, reason=f"canary passed: {reason}", actor=actor, metrics=metrics, now=now
        )
        if not canary_labels.labels_judged(report.get("labels") or {}, settings):
            # Labels lag the canary by days: promoted provisionally, re-judged by
            # monitor_drift once the canary's days mature (monitoring.canary_labels).
            tags = canary_labels.provisional_tags(report.get("days") or [day.isoformat()], settings)
            registry.tag_version(settings, str(canary["version"]), tags)
    else:
        transition = promotion.abort_canary(
            settings, reason=f"canary failed: {reason}", actor=actor, metrics=metrics, now=now
        )
    log.info("canary %s concluded: %s", canary["version"], transition.to_dict())
    return transition.to_dict()
