"""The canary's label check under label delays: promote provisionally, re-judge later.

Chargebacks arrive 1-10 days after the transaction, while a canary runs for hours (a
day in the demo), so at the end of a canary almost none of its frauds are known (0 in
every demo run) and its label check cannot judge. driftline does not hold the rollout
open for days; the rule is:

1. **Provisional promotion.** The canary is promoted on the checks it can judge
   (errors, latency, score shift; labels where enough are known). When its label check
   was not judged, the new champion is tagged ``canary.labels = provisional`` with the
   canary's days (``canary.days``) and the first monitoring day on which their labels
   are mature, ``canary.rejudge_on`` = the last canary day + ``label_maturity_days``
   + 1 (:func:`provisional_tags`).
2. **Re-judgement.** From that day on, ``monitor_drift`` (before judging drift) compares
   the rows the canary answered with the rows the previous champion answered on the
   same days, labelled with the chargebacks reported within ``label_maturity_days`` of
   each transaction's day (:func:`judge`). When both have ``canary_min_positives``
   frauds and the canary's PR-AUC is below the champion's by more than
   ``canary_label_tolerance`` *and* significantly (the upper end of the bootstrap
   interval of the difference below zero), the promotion is rolled back to the
   previous champion; otherwise it is confirmed (or kept, for lack of evidence). Either
   way it is judged once (tag ``canary.labels`` becomes ``confirmed``,
   ``rolled_back`` or ``kept``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd

from driftline.core.evidence import difference_interval, row_groups
from driftline.core.settings import Settings

#: Version tags of a provisional promotion.
LABELS_TAG = "canary.labels"
DAYS_TAG = "canary.days"
REJUDGE_TAG = "canary.rejudge_on"
PROVISIONAL = "provisional"

Outcome = Literal["confirmed", "rolled_back", "kept"]


def provisional_tags(days: list[str], settings: Settings) -> dict[str, str]:
    """Tags of a promotion whose label check could not judge the canary's ``days``."""
    last = date.fromisoformat(max(days))
    rejudge = last + timedelta(days=settings.label_maturity_days + 1)
    return {
        LABELS_TAG: PROVISIONAL,
        DAYS_TAG: f"{min(days)}..{max(days)}",
        REJUDGE_TAG: rejudge.isoformat(),
    }


def enough_frauds(block: dict[str, Any], settings: Settings) -> bool:
    """Whether one variant's label block can be judged: a PR-AUC, and at least
    ``canary_min_positives`` accounts with a reported fraud (``fraud_accounts``: a burst
    of frauds on one card is one piece of evidence; :func:`driftline.core.evidence.
    fraud_accounts`)."""
    return (
        block.get("pr_auc") is not None
        and int(block.get("fraud_accounts", 0)) >= settings.canary_min_positives
    )


def labels_judged(labels: dict[str, dict[str, Any]], settings: Settings) -> bool:
    """Whether a canary report's label check judged (both variants had enough frauds)."""
    return all(enough_frauds(labels.get(v) or {}, settings) for v in ("canary", "champion"))


def canary_days(tags: dict[str, str]) -> tuple[date, date] | None:
    """The first and last canary day of a provisional promotion, from its tags."""
    text = tags.get(DAYS_TAG, "")
    if ".." not in text:
        return None
    first, last = text.split("..", 1)
    return date.fromisoformat(first), date.fromisoformat(last)


def due(tags: dict[str, str], day: date) -> bool:
    """Whether a provisional promotion is to be re-judged on monitoring ``day``."""
    if tags.get(LABELS_TAG) != PROVISIONAL or not tags.get(REJUDGE_TAG):
        return False
    return day >= date.fromisoformat(tags[REJUDGE_TAG])


@dataclass(frozen=True)
class Rejudgement:
    """The label verdict on a provisionally promoted canary.

    Attributes:
        outcome: ``confirmed``, ``rolled_back`` or ``kept`` (not enough frauds known).
        reason: One sentence with the numbers.
        canary: ``rows``, ``positives``, ``pr_auc`` of the canary's rows.
        champion: The same for the previous champion's rows of the same days.
        difference: Canary minus champion PR-AUC and its interval (None when not judged).
    """

    outcome: Outcome
    reason: str
    canary: dict[str, Any]
    champion: dict[str, Any]
    difference: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def label_block(
    rows: pd.DataFrame, frauds: set[str]
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Labels and scores of ``rows`` (a missing score as 0) and their summary block.

    The block: ``rows``, ``positives`` (rows whose transaction is in ``frauds``),
    ``fraud_accounts`` and ``pr_auc`` (None unless both classes are present).
    """
    from driftline.core.evidence import average_precision, fraud_accounts

    labels = rows["transaction_id"].astype(str).isin(frauds).to_numpy(dtype=np.int64)
    scores = pd.to_numeric(rows["score"], errors="coerce").fillna(0.0).to_numpy(dtype=np.float64)
    value = average_precision(labels, scores) if 0 < labels.sum() < labels.size else None
    block = {
        "rows": int(labels.size),
        "positives": int(labels.sum()),
        "fraud_accounts": fraud_accounts(rows, labels),
        "pr_auc": value,
    }
    return labels, scores, block


def judge(
    canary: pd.DataFrame, champion: pd.DataFrame, frauds: set[str], settings: Settings
) -> Rejudgement:
    """Re-judge a provisional promotion on the canary's matured days (pure).

    Args:
        canary: Prediction-log rows the canary answered (``transaction_id``, ``score``).
        champion: Rows the previous champion answered on the same days.
        frauds: Transaction ids with a chargeback reported within
            ``label_maturity_days`` of their day.
        settings: ``canary_min_positives``, ``canary_label_tolerance`` and the bootstrap.
    """
    ya, sa, a = label_block(canary, frauds)
    yb, sb, b = label_block(champion, frauds)
    need = settings.canary_min_positives
    if not (enough_frauds(a, settings) and enough_frauds(b, settings)):
        return Rejudgement(
            "kept",
            f"labels still insufficient: accounts with a known fraud on the canary's days "
            f"{a['fraud_accounts']} canary / {b['fraud_accounts']} champion, {need} needed "
            "each; the promotion stands",
            a,
            b,
        )
    # Fraud campaigns, not rows, are resampled (frauds come in bursts; core.evidence).
    estimate = difference_interval(
        (ya, sa),
        (yb, sb),
        samples=settings.drift_bootstrap_samples,
        confidence=settings.drift_confidence,
        groups_a=row_groups(canary, ya),
        groups_b=row_groups(champion, yb),
    )
    value = float(estimate.value) if estimate.value is not None else a["pr_auc"] - b["pr_auc"]
    text = (
        f"canary PR-AUC {a['pr_auc']:.3f} vs previous champion {b['pr_auc']:.3f} on matured "
        f"labels ({value:+.3f}, interval [{estimate.low:+.3f}, {estimate.high:+.3f}])"
        if estimate.low is not None and estimate.high is not None
        else f"canary PR-AUC {a['pr_auc']:.3f} vs previous champion {b['pr_auc']:.3f}"
    )
    worse = value < -settings.canary_label_tolerance and estimate.below_zero
    if worse:
        return Rejudgement("rolled_back", f"{text}: significantly worse", a, b, estimate.to_dict())
    return Rejudgement("confirmed", f"{text}: not significantly worse", a, b, estimate.to_dict())
