"""The monitoring steps the ``monitor_drift`` DAG and ``driftline monitor`` call.

:func:`check_interval` judges one day of served traffic against the champion's drift
reference (data and prediction drift), judges the champion's served scores on the
matured days against the labels known by then (performance drift), records the result
in the drift log and returns the retrain decision. :func:`record_trigger` then notes
a triggered retrain, after the request went out, so a failed hand-off is retried by a
rerun instead of being lost.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Collection, Sequence
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from driftline.core.columns import LABEL
from driftline.core.evidence import MERCHANT, USER, fraud_accounts, row_groups
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.features import first_complete_day
from driftline.data.predictions import read_predictions
from driftline.lifecycle import registry
from driftline.monitoring.consistency import check_consistency
from driftline.monitoring.drift import (
    SCORE,
    champion_rows,
    measure_drift,
    performance_check,
    performance_days,
)
from driftline.monitoring.drift_log import DriftLog
from driftline.monitoring.drift_report import report_folder, write_drift_report
from driftline.monitoring.policy import TriggerDecision, decide, evidence_days
from driftline.monitoring.reference import load_reference
from driftline.monitoring.regime import rejudge_provisional
from driftline.monitoring.served import frauds_known_within, logged_days, read_served

log = logging.getLogger(__name__)

#: Reference columns that identify and date a row (references logged since they exist).
TRANSACTION_ID = "transaction_id"
EVENT_TIME = "event_timestamp"
#: Column of the performance reference's labels under the check's rule.
KNOWN = "known"
#: Columns of the performance reference's rows: score, label, and the campaign keys.
_EVIDENCE_COLUMNS = (SCORE, KNOWN, USER, MERCHANT)


def _reference_evidence(
    reference: pd.DataFrame,
    settings: Settings,
    served: pd.DataFrame | None = None,
    served_days: Sequence[date] = (),
) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray | None] | None, str, str]:
    """The champion's reference rows it was not fitted on, labelled like the served check.

    Those are the holdout days, or with too few labelled frauds there the validation
    and holdout days (the train days would flatter it; see :func:`_holdout_first`),
    joined by ``served``: the champion's own first served days ``served_days``
    (:func:`_served_reference`), the same kind of rows as the check's. When the
    reference dates its rows, their labels are the chargebacks reported within
    ``label_maturity_days`` of the transaction's day -- the rule the served check uses
    -- instead of the training labels, which were known at a later cut-off (a
    comparison biased low before any drift). Returns ``(labels, scores, groups)`` (None
    without scores, or both classes; groups: the rows' fraud campaigns for the cluster
    bootstrap, None when a part lacks ``user_id``, as a reference logged before it
    stored them does), the label rule used and which days the rows come from.
    """
    offline, rule = _offline_reference(reference, settings)
    source = _source(offline, served_days)
    parts = [part for part in (offline, served) if part is not None and len(part)]
    if not parts:
        return None, rule, source
    common = [c for c in _EVIDENCE_COLUMNS if all(c in part.columns for part in parts)]
    rows = pd.concat([part[common] for part in parts], ignore_index=True)
    labels = rows[KNOWN].to_numpy(dtype=np.int64)
    if not 0 < labels.sum() < labels.size:
        return None, rule, source
    scores = rows[SCORE].to_numpy(dtype=np.float64)
    return (labels, scores, row_groups(rows, labels)), rule, source


def _offline_reference(
    reference: pd.DataFrame, settings: Settings
) -> tuple[pd.DataFrame | None, str]:
    """The reference's holdout-first rows (with ``known``, the labels under the check's
    rule) and that rule."""
    unseen = reference
    if "split" in reference.columns:
        unseen = reference[reference["split"].isin(["valid", "holdout"])]
    if SCORE not in unseen.columns or unseen.empty:
        return None, "no reference scores"
    if {TRANSACTION_ID, EVENT_TIME} <= set(unseen.columns):
        days = pd.to_datetime(unseen[EVENT_TIME], utc=True).dt.date
        frauds = frauds_known_within(settings, min(days), max(days), settings.label_maturity_days)
        labels = unseen[TRANSACTION_ID].astype(str).isin(frauds).to_numpy(dtype=np.int64)
        rule = _label_rule(settings)
    elif LABEL in unseen.columns:
        labels = unseen[LABEL].to_numpy(dtype=np.int64)
        rule = "reference: training labels (the reference does not date its rows)"
    else:
        return None, "no reference labels"
    return unseen.assign(**{KNOWN: labels})[_holdout_first(unseen, labels, settings)], rule


def _source(offline: pd.DataFrame | None, served_days: Sequence[date]) -> str:
    """Which days the performance reference's rows come from (recorded with the check)."""
    parts = []
    if offline is not None and len(offline):
        splits = "+".join(sorted(set(offline["split"]))) if "split" in offline else "reference"
        if EVENT_TIME in offline.columns:
            stamps = pd.to_datetime(offline[EVENT_TIME], utc=True).dt.date
            splits = f"{splits} {min(stamps)}..{max(stamps)}"
        parts.append(splits)
    if served_days:
        parts.append(f"served as champion {', '.join(d.isoformat() for d in served_days)}")
    return " + ".join(parts) or "none"


def _holdout_first(unseen: pd.DataFrame, labels: np.ndarray, settings: Settings) -> np.ndarray:
    """The holdout rows alone when they hold enough labelled frauds, else all ``unseen``.

    The validation days chose the model (early stopping and the tuning trials' best), so
    its score there is optimistic; the holdout days only judged it. A reference from the
    validation days flags an unchanged model as degraded on ordinary days. Frauds count
    as in the served check (:func:`~driftline.core.evidence.fraud_accounts`). Returns the
    rows' mask.
    """
    everything = np.ones(len(unseen), dtype=bool)
    if "split" not in unseen.columns:
        return everything
    holdout = (unseen["split"] == "holdout").to_numpy()
    held = labels[holdout]
    enough = fraud_accounts(unseen[holdout], held) >= settings.drift_min_positives
    return holdout if enough and held.sum() < held.size else everything


def _drifted_days(drift_log: DriftLog) -> set[date]:
    """Transaction days the drift log judged drifted (:func:`~driftline.monitoring.policy.
    evidence_days` of every drifted result: its own day, or its matured window)."""
    return {
        day for result in drift_log.history() if result.drifted for day in evidence_days(result)
    }


def _served_reference(
    settings: Settings,
    version: str,
    reference: pd.DataFrame,
    before: date,
    drifted: Collection[date] = (),
) -> tuple[pd.DataFrame | None, list[date]]:
    """The champion's own first served days, the second part of its reference.

    Of the first ``drift_reference_served_days`` days on which ``version`` answered as
    champion with stored features (:func:`~driftline.monitoring.drift.champion_rows`),
    after its reference's newest day and before ``before`` (the first day the check
    judges: a day is never judged against itself), those not judged drifted
    (``drifted``: a drift that starts right after a promotion stays out of the
    reference), labelled with the chargebacks reported within ``label_maturity_days``
    (the check's rule; those days are older than the judged ones, so their labels are
    as mature). One holdout day holds a handful of fraud campaigns, so its PR-AUC alone
    is too uncertain for a real drop to be significant; these days are the same kind of
    rows as the judged ones: served scores of online features. Returns the rows
    (``score``, ``known``, accounts) and their days (none: None, []).
    """
    wanted = settings.drift_reference_served_days
    if wanted == 0:
        return None, []
    since = None
    if EVENT_TIME in reference.columns and len(reference):
        since = pd.to_datetime(reference[EVENT_TIME], utc=True).max().date() + timedelta(days=1)
    frames: list[pd.DataFrame] = []
    days: list[date] = []
    first_days = 0
    for day in logged_days(settings, since=since):
        if day >= before or first_days == wanted:
            break
        rows = champion_rows(read_predictions(settings, day), version)
        if not len(rows):
            continue
        first_days += 1
        if day not in drifted:
            frames.append(rows)
            days.append(day)
    if not days:
        return None, []
    rows = pd.concat(frames, ignore_index=True)
    frauds = frauds_known_within(settings, days[0], days[-1], settings.label_maturity_days)
    known = rows[TRANSACTION_ID].astype(str).isin(frauds).to_numpy(dtype=np.int64)
    served = rows.assign(**{KNOWN: known})
    return served[[c for c in _EVIDENCE_COLUMNS if c in served.columns]], days


def _label_rule(settings: Settings) -> str:
    return (
        f"chargebacks reported within {settings.label_maturity_days} days of the "
        "transaction's day (served and reference alike)"
    )


def check_interval(interval: Interval, settings: Settings) -> dict[str, Any]:
    """Drift of one day's served traffic, recorded in the drift log, and the decision.

    Args:
        interval: One day ``[day, day + 1)``; labels reported up to that day count.
        settings: Thresholds and locations.

    A provisionally promoted champion whose canary days have matured is re-judged on
    their labels first (:func:`~driftline.monitoring.regime.rejudge_provisional`; it
    may roll back), so the day is judged against the champion that then serves. The
    day's served fresh features are compared with the offline ones
    (:func:`~driftline.monitoring.consistency.check_consistency`) and recorded in the
    result's ``consistency`` (flagged below ``consistency_min_share``, never failing).

    Returns:
        ``day``, ``champion`` (version or None), ``drift`` (the
        :class:`~driftline.monitoring.result.DriftResult` as a dict), ``canary_rejudged``
        (the re-judgement, None when none was due) and ``decision``
        (:class:`~driftline.monitoring.policy.TriggerDecision` as a dict). Without a champion
        nothing is judged and the decision is not to retrain.
    """
    day = interval.start.date()
    rejudged = rejudge_provisional(settings, day, actor="monitor_drift")
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    if champion is None:
        decision = TriggerDecision(False, f"{day}: no champion serving, nothing to monitor")
        return {
            "day": day.isoformat(),
            "champion": None,
            "drift": None,
            "canary_rejudged": rejudged,
            **_out(decision),
        }
    version = str(champion.version)
    # After a promotion this is the new champion's reference: its newest labelled week,
    # which holds at least retrain_min_drift_days + valid_days + holdout_days post-drift
    # days when the retrain waited for labels (policy.decide).
    reference = load_reference(settings, version)
    matured = performance_days(interval, settings)
    drift_log = DriftLog.load(settings)
    served, served_days = _served_reference(
        settings, version, reference, matured.start.date(), _drifted_days(drift_log)
    )
    evidence, rule, source = _reference_evidence(reference, settings, served, served_days)
    last_matured = matured.end.date() - timedelta(days=1)
    check = performance_check(
        read_served(settings, matured.days()),
        frauds_known_within(
            settings, matured.start.date(), last_matured, settings.label_maturity_days
        ),
        days=matured,
        reference_pr_auc=None,
        settings=settings,
        version=version,
        reference=evidence,
        label_rule=rule,
        reference_source=source,
    )
    measurement = measure_drift(
        reference,
        read_predictions(settings, day),
        interval,
        settings,
        performance=check,
        champion_version=version,
    )
    consistency = consistency_entry(settings, day)
    measurement = dataclasses.replace(
        measurement, result=dataclasses.replace(measurement.result, consistency=consistency)
    )
    result = write_drift_report(measurement, report_folder(settings, day))
    drift_log.record(result)
    drift_log.save()
    decision = decide(
        drift_log.history(until=day),
        last_trigger_day=drift_log.last_trigger_day,
        today=interval,
        settings=settings,
    )
    log.info("monitor %s (champion %s): %s", day, version, decision.reason)
    return {
        "day": day.isoformat(),
        "champion": version,
        "drift": result.to_dict(),
        "canary_rejudged": rejudged,
        **_out(decision),
    }


def consistency_entry(settings: Settings, day: date) -> dict[str, Any]:
    """The day's online/offline fresh-feature consistency, logged in one line.

    A failure to check is recorded (``status`` ``error``) and logged, never raised:
    the consistency check must not fail the monitor run.
    """
    try:
        result = check_consistency(settings, day)
    except Exception as error:
        log.warning("fresh-feature consistency %s: not checked", day, exc_info=True)
        line = f"fresh-feature consistency {day}: not checked ({type(error).__name__}: {error})"
        return {"day": day.isoformat(), "status": "error", "flagged": False, "line": line}
    log.log(logging.WARNING if result.flagged else logging.INFO, "%s", result.line())
    return {**result.to_dict(), "line": result.line()}


def _out(decision: TriggerDecision) -> dict[str, Any]:
    return {"decision": decision.to_dict()}


def record_trigger(day: date, decision: dict[str, Any], settings: Settings) -> None:
    """Note in the drift log that ``decision`` (a triggering one) started a retrain."""
    drift_log = DriftLog.load(settings)
    drift_log.record_trigger(
        day,
        TriggerDecision(
            trigger=bool(decision["trigger"]),
            reason=str(decision["reason"]),
            window_start=date.fromisoformat(decision["window_start"]),
            window_end=date.fromisoformat(decision["window_end"]),
        ),
    )
    drift_log.save()


def training_window_start(end: date, settings: Settings) -> date:
    """First day of a retrain's window ending at ``end``: ``retrain_window_days`` back,
    but never before :func:`~driftline.data.features.first_complete_day` (the day the
    training set would refuse an earlier window from)."""
    start = end - timedelta(days=settings.retrain_window_days)
    complete = first_complete_day(settings)
    return start if complete is None or complete < start else min(complete, end - timedelta(days=1))


def retrain_request(check: dict[str, Any], settings: Settings) -> dict[str, str]:
    """The retrain request of a triggering :func:`check_interval` result.

    The training window ends at the decision's window end (the label cut-off: the
    checked day's end) and spans ``retrain_window_days``, so it covers the labelled days
    of the drift, but starts no earlier than the first day with complete look-back
    features (:func:`~driftline.data.features.first_complete_day`). The drift window,
    the reason and the day's drift report go along.
    """
    decision = check["decision"]
    end = date.fromisoformat(decision["window_end"])
    drift = check.get("drift") or {}
    return {
        "drift_start": decision["window_start"],
        "drift_day": check["day"],
        "window_start": training_window_start(end, settings).isoformat(),
        "window_end": end.isoformat(),
        "reason": str(decision["reason"]),
        "drift_report": str(drift.get("report_html") or drift.get("report_json") or ""),
    }
