"""Online = offline, measured: the served fresh features against the offline ones.

The scoring service logs the fresh features each transaction was scored with; the
offline job (:mod:`driftline.data.fresh`) computes the same features for every
transaction in the lake with the same function. :func:`check_consistency` joins one
day's served rows with the offline rows by ``transaction_id`` and counts, per feature
and overall, the rows whose values are identical (within ``1e-9`` relative or absolute;
a NaN equals a NaN). The rows compared are the served rows that a model answered
(``champion`` or ``canary``) with fresh features computed (not fallen back), once per
transaction id (the first line logged: a retried request logs it again).

The two can only differ when the event state held other events than the lake, and each
mismatched row is put in the first category that explains it:

* ``missing_offline``: the transaction is not in the offline table (it never reached
  the lake, or the offline job has not run on it);
* ``late_event``: the offline row counts more earlier events than the served one (an
  earlier transaction reached the state after this one was scored);
* ``extra_online``: the served row counts more earlier events (the state held a
  transaction the lake does not: a replay of a transaction quarantined by the gate, say);
* ``other``: the same counts but other values (nothing should land here).

Each category keeps up to :data:`EXAMPLES` transaction ids. The result is a monitor
output (``monitor_drift`` records it with the day's drift result): a share below
``consistency_min_share`` flags the day; it never fails the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from driftline.core.feature_spec import FRESH_FEATURES
from driftline.core.settings import Settings
from driftline.data.fresh import MissingFreshFeaturesError, read_fresh_features
from driftline.data.predictions import read_predictions

#: Float tolerance of "identical" (``math.isclose`` semantics).
REL_TOL = 1e-9
ABS_TOL = 1e-9
#: Example transaction ids kept per mismatch category.
EXAMPLES = 5
#: Who answered the rows compared (a model; the fallback chain's rules read no features).
MODEL_ANSWERS = ("champion", "canary")
#: Mismatch categories, in the order a row is tried against them.
CATEGORIES = ("missing_offline", "late_event", "extra_online", "other")
#: The fresh features that count earlier events (a difference says which side saw more).
COUNTS: tuple[str, ...] = tuple(name for name in FRESH_FEATURES if "_txn_count_" in name)

#: :attr:`ConsistencyResult.status` values.
STATUS_OK = "ok"
STATUS_NO_ROWS = "no_served_rows"
STATUS_NOT_LOGGED = "fresh_not_logged"
STATUS_NO_OFFLINE = "no_offline_features"


@dataclass(frozen=True)
class ConsistencyResult:
    """The served fresh features of one day against the offline ones.

    Attributes:
        day: The day (ISO date).
        status: ``ok`` (compared), ``no_served_rows`` (no row to compare),
            ``fresh_not_logged`` (the day's lines carry no fresh features: logged before
            they existed) or ``no_offline_features`` (no ``features/fresh`` partition).
        rows: Served rows compared (distinct transaction ids).
        identical: Rows whose every fresh feature is identical.
        share: ``identical / rows`` (None when nothing was compared).
        min_share: ``consistency_min_share`` it was held to.
        flagged: ``share`` is below ``min_share``.
        features: Per feature: ``rows``, ``identical``, ``share``.
        mismatches: Per category (:data:`CATEGORIES`): ``rows`` and up to
            :data:`EXAMPLES` transaction ids in ``examples``.
        skipped: Served lines left out: ``fallback`` (fresh features fell back),
            ``not_model`` (answered by the rules), ``duplicate`` (a transaction id
            logged again).
    """

    day: str
    status: str
    rows: int = 0
    identical: int = 0
    share: float | None = None
    min_share: float = 0.995
    flagged: bool = False
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    mismatches: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ConsistencyResult:
        """Inverse of :meth:`to_dict`."""
        return cls(**data)

    def line(self) -> str:
        """One line for a task log."""
        if self.status != STATUS_OK or self.share is None:
            return f"fresh-feature consistency {self.day}: not checked ({self.status})"
        explained = ", ".join(
            f"{name} {part['rows']}" for name, part in self.mismatches.items() if part["rows"]
        )
        verdict = "BELOW" if self.flagged else "meets"
        return (
            f"fresh-feature consistency {self.day}: {self.identical}/{self.rows} served rows "
            f"identical offline ({self.share:.2%}; {verdict} {self.min_share:.1%})"
            + (f"; mismatches: {explained}" if explained else "")
        )


def identical(served: np.ndarray, offline: np.ndarray) -> np.ndarray:
    """Element-wise: equal within :data:`REL_TOL`/:data:`ABS_TOL`, or both NaN."""
    both_nan = np.isnan(served) & np.isnan(offline)
    with np.errstate(invalid="ignore"):
        scale = np.maximum(np.abs(served), np.abs(offline))
        close = np.abs(served - offline) <= np.maximum(REL_TOL * scale, ABS_TOL)
    result: np.ndarray = both_nan | close
    return result


def served_rows(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    """The comparable served rows of a day's prediction lines, and what was left out."""
    by_model = frame["answered_by"].isin(MODEL_ANSWERS)
    if "fresh_fallback" in frame.columns:
        fell_back = frame["fresh_fallback"].notna()
    else:  # lines of a service that did not say why: any fallback is left out
        fell_back = frame["features_fallback"].astype(bool)
    kept = frame[by_model & ~fell_back]
    distinct = kept.drop_duplicates("transaction_id", keep="first")
    skipped = {
        "not_model": int((~by_model).sum()),
        "fallback": int((by_model & fell_back).sum()),
        "duplicate": len(kept) - len(distinct),
    }
    return distinct, skipped


def _category(served: pd.Series, offline: pd.Series, found: bool) -> str:
    """Which of :data:`CATEGORIES` explains one mismatched row."""
    if not found:
        return "missing_offline"
    more_offline = any(offline[name] > served[name] for name in COUNTS)
    if more_offline:
        return "late_event"
    if any(offline[name] < served[name] for name in COUNTS):
        return "extra_online"
    return "other"


@dataclass(frozen=True)
class Comparison:
    """The counts of :class:`ConsistencyResult` (see there)."""

    rows: int
    identical: int
    features: dict[str, dict[str, Any]]
    mismatches: dict[str, dict[str, Any]]


def compare(served: pd.DataFrame, offline: pd.DataFrame) -> Comparison:
    """Served rows against offline rows, per feature, overall and by mismatch category.

    Args:
        served: One row per transaction id: ``transaction_id`` and ``FRESH_FEATURES``.
        offline: The offline rows (``transaction_id`` and ``FRESH_FEATURES``).
    """
    joined = served[["transaction_id", *FRESH_FEATURES]].merge(
        offline[["transaction_id", *FRESH_FEATURES]].drop_duplicates("transaction_id"),
        on="transaction_id",
        how="left",
        suffixes=("", "_offline"),
        indicator=True,
    )
    found = (joined["_merge"] == "both").to_numpy()
    same = {}
    for name in FRESH_FEATURES:
        left = pd.to_numeric(joined[name], errors="coerce").to_numpy(dtype=np.float64)
        right = pd.to_numeric(joined[f"{name}_offline"], errors="coerce").to_numpy(np.float64)
        same[name] = identical(left, right) & found
    all_same = np.logical_and.reduce([same[name] for name in FRESH_FEATURES])
    rows = len(joined)
    mismatches: dict[str, dict[str, Any]] = {c: {"rows": 0, "examples": []} for c in CATEGORIES}
    for position in np.flatnonzero(~all_same):
        record = joined.iloc[position]
        offline_values = record[[f"{name}_offline" for name in FRESH_FEATURES]]
        offline_values.index = pd.Index(FRESH_FEATURES)
        part = mismatches[_category(record, offline_values, bool(found[position]))]
        part["rows"] += 1
        if len(part["examples"]) < EXAMPLES:
            part["examples"].append(str(record["transaction_id"]))
    return Comparison(
        rows=rows,
        identical=int(all_same.sum()),
        features={
            name: {
                "rows": rows,
                "identical": int(same[name].sum()),
                "share": float(same[name].mean()) if rows else None,
            }
            for name in FRESH_FEATURES
        },
        mismatches=mismatches,
    )


def check_consistency(settings: Settings, day: date) -> ConsistencyResult:
    """Compare the fresh features served on ``day`` with the offline ones of ``day``.

    Reads the day's prediction log (:func:`~driftline.data.predictions.read_predictions`)
    and the offline table ``features/fresh/dt=day``
    (:func:`~driftline.data.fresh.read_fresh_features`).

    Returns:
        The result; ``flagged`` when the share of identical rows is below
        ``consistency_min_share``. A day that cannot be compared says why in ``status``
        and is not flagged.
    """
    iso, floor = day.isoformat(), settings.consistency_min_share
    frame = read_predictions(settings, day)
    if frame.empty:
        return ConsistencyResult(iso, STATUS_NO_ROWS, min_share=floor)
    if not set(FRESH_FEATURES) <= set(frame.columns):
        return ConsistencyResult(iso, STATUS_NOT_LOGGED, min_share=floor)
    served, skipped = served_rows(frame)
    if served.empty:
        return ConsistencyResult(iso, STATUS_NO_ROWS, min_share=floor, skipped=skipped)
    try:
        offline = read_fresh_features(settings, [day]).to_pandas()
    except MissingFreshFeaturesError:
        return ConsistencyResult(iso, STATUS_NO_OFFLINE, min_share=floor, skipped=skipped)
    counts = compare(served, offline)
    share = counts.identical / counts.rows
    return ConsistencyResult(
        iso,
        STATUS_OK,
        rows=counts.rows,
        identical=counts.identical,
        share=share,
        min_share=floor,
        flagged=share < floor,
        features=counts.features,
        mismatches=counts.mismatches,
        skipped=skipped,
    )
