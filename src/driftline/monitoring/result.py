"""What the drift check of one interval found (:class:`DriftResult`), and what
:func:`~driftline.monitoring.drift.measure_drift` hands to the report writer."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import date
from typing import Any

#: :attr:`DriftResult.status` of an interval that was judged, and of one with too few rows.
STATUS_OK = "ok"
STATUS_INSUFFICIENT = "insufficient_data"


@dataclass(frozen=True)
class DriftResult:
    """Drift of one data interval of served traffic against the reference.

    Attributes:
        interval: The interval, as ``[YYYY-MM-DD, YYYY-MM-DD)``.
        day: First day of the interval (ISO date); the key of the drift log.
        status: ``"ok"`` or ``"insufficient_data"`` (fewer than ``drift_min_rows`` served
            rows: nothing was tested and no decision may rest on it).
        rows: Served rows in the interval.
        reference_rows: Reference rows compared against (after down-sampling).
        drifted_columns: Model inputs judged drifted, in ``MODEL_INPUTS`` order.
        drift_share: Drifted columns / judged columns.
        dataset_drift: ``drift_share`` reached ``drift_share_threshold``.
        prediction_drift_score: PSI of served versus reference scores (None if skipped).
        prediction_drift: ``prediction_drift_score`` reached ``drift_prediction_threshold``.
        performance: Label metrics (see :func:`~driftline.monitoring.drift.measure_drift`),
            None without labels.
        performance_check: Result of :func:`~driftline.monitoring.drift.performance_check`
            on matured days, if run.
        performance_drift: ``performance_check`` found a significant PR-AUC drop
            (verdict ``degraded``).
        column_scores: Per judged column: ``method``, ``threshold`` (calibrated on the
            reference, see :mod:`~driftline.monitoring.calibration`), ``score``,
            ``drifted``.
        fallback_rows: Served rows scored with fallback features, left out of every
            check (``rows`` counts the others).
        calibration: The thresholds' calibration: ``chunks``, ``chunking``,
            ``baseline_share`` and ``baseline_share_max`` (the share of drifted inputs
            on reference days without drift), ``thresholds``, ``methods``; None when
            the reference was too small or the interval had insufficient data.
        notes: Human-readable remarks (skipped checks, columns not judged, ...).
        consistency: The served fresh features against the offline ones
            (:class:`~driftline.monitoring.consistency.ConsistencyResult` as a dict;
            ``flagged`` below ``consistency_min_share``; never part of ``drifted``).
            None when not checked.
        report_html: Path of Evidently's HTML report, None when none was written.
        report_json: Path of the ``drift.json`` summary, None when none was written.
    """

    interval: str
    day: str
    status: str
    rows: int
    reference_rows: int
    drifted_columns: list[str]
    drift_share: float
    dataset_drift: bool
    prediction_drift_score: float | None
    prediction_drift: bool
    performance: dict[str, Any] | None = None
    performance_check: dict[str, Any] | None = None
    performance_drift: bool = False
    column_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    fallback_rows: int = 0
    calibration: dict[str, Any] | None = None
    consistency: dict[str, Any] | None = None
    report_html: str | None = None
    report_json: str | None = None

    @property
    def sufficient(self) -> bool:
        """Whether the interval had enough rows for a drift verdict."""
        return self.status == STATUS_OK

    @property
    def drifted(self) -> bool:
        """Data, prediction or performance drift on an interval with enough data."""
        return self.sufficient and (
            self.dataset_drift or self.prediction_drift or self.performance_drift
        )

    @property
    def evidence_day(self) -> date:
        """Earliest transaction day this result shows drift on.

        With performance drift, the newest matured day that was judged (labels lag the
        interval), also when the interval's inputs or scores drifted as well: its own
        check dates the drift before its own day. The interval's own day for data or
        prediction drift alone.
        """
        check = self.performance_check
        if check and (self.performance_drift or not (self.dataset_drift or self.prediction_drift)):
            return date.fromisoformat(str(check["last_day"]))
        return self.start_day

    @property
    def start_day(self) -> date:
        """:attr:`day` as a date."""
        return date.fromisoformat(self.day)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (with the derived ``drifted`` flag)."""
        return {**asdict(self), "drifted": self.drifted}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftResult:
        """Inverse of :meth:`to_dict` (derived and unknown keys are ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class DriftMeasurement:
    """The computed drift of one interval, before anything is written.

    Attributes:
        result: The result; its ``report_html``/``report_json`` are still None (the
            writer, :func:`~driftline.monitoring.drift_report.write_drift_report`,
            sets them).
        snapshot: Evidently's report to render as HTML; None when the interval had
            insufficient data (nothing was tested, no HTML report is written).
    """

    result: DriftResult
    snapshot: Any | None = None
