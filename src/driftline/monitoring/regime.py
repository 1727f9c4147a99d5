"""Evidence on the new regime for a promotion, and the re-judgement of a provisional one.

:func:`regime_evidence` gathers what :func:`driftline.lifecycle.gates.regime_gate`
judges: the served transactions of the post-drift days the candidate did not train on
(from the drift start, or the end of its train split if later, to its label cut-off),
scored by the candidate *and* by the champion through the same registered pyfunc path
(the features are those served and logged, fallback rows left out), labelled with the
chargebacks reported before the cut-off -- the labels the candidate's own training set
had.

:func:`rejudge_provisional` applies :mod:`driftline.monitoring.canary_labels` on a
monitoring day: once a provisionally promoted champion's canary days have matured, it
confirms the promotion or rolls it back.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from driftline.core.evidence import USER, row_groups
from driftline.core.settings import Settings
from driftline.lifecycle import promotion, registry
from driftline.lifecycle.gates import RegimeEvidence
from driftline.monitoring import canary_labels
from driftline.monitoring.drift import FALLBACK, model_inputs
from driftline.monitoring.policy import train_split_end
from driftline.monitoring.served import (
    frauds_known_within,
    logged_days,
    read_served,
    reported_frauds,
)

log = logging.getLogger(__name__)

#: Registered-model tag naming the champion a promotion replaced (``lifecycle.promotion``).
PREVIOUS_CHAMPION_TAG = "champion.previous"


def _usable(served: pd.DataFrame) -> pd.DataFrame:
    """Served rows scored with stored features, one per transaction."""
    if served.empty:
        return served
    rows = served
    if FALLBACK in rows.columns:
        rows = rows[~rows[FALLBACK].eq(True)]
    return rows.drop_duplicates("transaction_id", keep="last")


def regime_evidence(
    settings: Settings, *, candidate: str, champion: str, drift_start: date, cutoff: date
) -> RegimeEvidence:
    """Both versions' scores on the post-drift labelled days the candidate did not fit.

    Args:
        settings: Locations, the split sizes and ``gate_segments``.
        candidate: The candidate version.
        champion: The champion version it must beat.
        drift_start: The first drifted day (the retrain request's ``drift_start``).
        cutoff: The candidate's label cut-off (its window end, exclusive).
    """
    from driftline.training.packaging import load_version, predict_frame

    first = max(drift_start, train_split_end(cutoff, settings))
    days = [day for day in logged_days(settings, since=first) if day < cutoff]
    rows = _usable(read_served(settings, days))
    segments = [c.strip() for c in settings.gate_segments.split(",") if c.strip()]
    if rows.empty:
        return RegimeEvidence(
            np.zeros(0, dtype=np.int64),
            np.zeros(0),
            np.zeros(0),
            {},
            tuple(d.isoformat() for d in days),
            drift_start.isoformat(),
        )
    frauds = reported_frauds(settings, days[0], cutoff - timedelta(days=1))
    inputs = model_inputs(rows)
    scores = {
        version: predict_frame(load_version(settings, version), inputs)
        for version in (candidate, champion)
    }
    labels = rows["transaction_id"].astype(str).isin(frauds).to_numpy(dtype=np.int64)
    return RegimeEvidence(
        labels=labels,
        candidate=scores[candidate],
        champion=scores[champion],
        segments={c: inputs[c].astype(str).to_numpy() for c in segments if c in inputs},
        days=tuple(d.isoformat() for d in days),
        drift_start=drift_start.isoformat(),
        groups=row_groups(rows, labels),
        accounts=rows[USER].to_numpy() if USER in rows.columns else None,
    )


def rejudge_provisional(settings: Settings, day: date, *, actor: str) -> dict[str, Any] | None:
    """Re-judge a provisionally promoted champion once its canary days have matured.

    Returns the :class:`~driftline.monitoring.canary_labels.Rejudgement` as a dict (with
    ``version``), or None when nothing is due on ``day``. A ``rolled_back`` outcome has
    restored the previous champion.
    """
    champion = registry.version_by_alias(settings, registry.CHAMPION)
    if champion is None:
        return None
    version, tags = str(champion.version), dict(champion.tags or {})
    span = canary_labels.canary_days(tags)
    if not canary_labels.due(tags, day) or span is None:
        return None
    model_tags = registry.client(settings).get_registered_model(settings.model_name).tags or {}
    previous = model_tags.get(PREVIOUS_CHAMPION_TAG, "")
    first, last = span
    served = _usable(
        read_served(settings, [first + timedelta(days=n) for n in range((last - first).days + 1)])
    )
    if served.empty or not previous:
        canary_rows = champion_rows = served
    else:
        answered = served["model_version"].astype(str)
        canary_rows = served[(served["variant"] == "canary") & (answered == version)]
        champion_rows = served[(served["variant"] == "champion") & (answered == previous)]
    frauds = frauds_known_within(settings, first, last, settings.label_maturity_days)
    verdict = canary_labels.judge(canary_rows, champion_rows, frauds, settings)
    now = datetime(day.year, day.month, day.day, tzinfo=UTC)
    registry.tag_version(settings, version, {canary_labels.LABELS_TAG: verdict.outcome})
    if verdict.outcome == "rolled_back" and previous:
        promotion.rollback(
            settings,
            reason=f"canary re-judged on matured labels: {verdict.reason}",
            actor=actor,
            now=now,
        )
    log.info("provisional promotion of %s re-judged: %s", version, verdict.reason)
    return {"version": version, **verdict.to_dict()}
