"""The monitoring steps the ``monitor_drift`` DAG and ``driftline monitor`` call.

:func:`check_interval` judges one day of served traffic against the champion's drift
reference (data and prediction drift), judges the champion's served scores on the
matured days against the labels known by then (performance drift), records the result
in the drift log and returns the retrain decision. :func:`record_trigger` then notes
a triggered retrain, after the request went out, so a failed hand-off is retried by a
rerun instead of being lost.
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import Any

import numpy as np
import pandas as pd

from driftline.core.columns import LABEL
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.predictions import read_predictions
from driftline.lifecycle import registry
from driftline.monitoring.drift import measure_drift, performance_check, performance_days
from driftline.monitoring.drift_log import DriftLog
from driftline.monitoring.drift_report import report_folder, write_drift_report
from driftline.monitoring.policy import TriggerDecision, decide
from driftline.monitoring.reference import load_reference
from driftline.monitoring.served import read_served, reported_frauds

log = logging.getLogger(__name__)


def _reference_pr_auc(reference: pd.DataFrame, tags: dict[str, str]) -> float | None:
    """The champion's PR-AUC on the days of its reference it was not fitted on.

    Those are the validation and holdout days (the train days would flatter it). Falls
    back to the holdout PR-AUC tag when the reference lacks them, labels or a class.
    """
    unseen = reference
    if "split" in reference.columns:
        unseen = reference[reference["split"].isin(["valid", "holdout"])]
    if {LABEL, "score"} <= set(unseen.columns) and 0 < unseen[LABEL].sum() < len(unseen):
        from driftline.training.evaluate import score_metrics

        metrics = score_metrics(
            unseen[LABEL].to_numpy(dtype=np.int64), unseen["score"].to_numpy(dtype=np.float64)
        )
        return float(metrics["pr_auc"])
    value = tags.get("candidate.pr_auc")
    return float(value) if value else None


def check_interval(interval: Interval, settings: Settings) -> dict[str, Any]:
    """Drift of one day's served traffic, recorded in the drift log, and the decision.

    Args:
        interval: One day ``[day, day + 1)``; labels reported up to that day count.
        settings: Thresholds and locations.

    Returns:
        ``day``, ``champion`` (version or None), ``drift`` (the
        :class:`~driftline.monitoring.result.DriftResult` as a dict) and ``decision``
        (:class:`~driftline.monitoring.policy.TriggerDecision` as a dict). Without a champion
        nothing is judged and the decision is not to retrain.
    """
    day = interval.start.date()
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    if champion is None:
        decision = TriggerDecision(False, f"{day}: no champion serving, nothing to monitor")
        return {"day": day.isoformat(), "champion": None, "drift": None, **_out(decision)}
    version = str(champion.version)
    reference = load_reference(settings, version)
    matured = performance_days(interval, settings)
    check = performance_check(
        read_served(settings, matured.days()),
        reported_frauds(settings, matured.start.date(), day),
        days=matured,
        reference_pr_auc=_reference_pr_auc(reference, dict(champion.tags or {})),
        settings=settings,
        version=version,
    )
    measurement = measure_drift(
        reference,
        read_predictions(settings, day),
        interval,
        settings,
        performance=check,
        champion_version=version,
    )
    result = write_drift_report(measurement, report_folder(settings, day))
    drift_log = DriftLog.load(settings)
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
        **_out(decision),
    }


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


def retrain_request(check: dict[str, Any], settings: Settings) -> dict[str, str]:
    """The retrain request of a triggering :func:`check_interval` result.

    The training window ends at the decision's window end (the label cut-off: the
    checked day's end) and spans ``retrain_window_days``, so it covers the labelled days
    of the drift. The drift window, the reason and the day's drift report go along.
    """
    decision = check["decision"]
    end = date.fromisoformat(decision["window_end"])
    drift = check.get("drift") or {}
    return {
        "drift_start": decision["window_start"],
        "drift_day": check["day"],
        "window_start": (end - timedelta(days=settings.retrain_window_days)).isoformat(),
        "window_end": end.isoformat(),
        "reason": str(decision["reason"]),
        "drift_report": str(drift.get("report_html") or drift.get("report_json") or ""),
    }
