"""Drift of the served traffic against the champion's training data, and when to retrain.

Three questions are asked of one data interval of the prediction log
(:func:`driftline.data.predictions.read_predictions`), each against the *reference*
(the newest labelled week of the champion's training set, scored by the champion; see
:mod:`driftline.monitoring.reference`):

* **Data drift** -- has the distribution of the model inputs moved? Evidently tests each
  column of :data:`~driftline.core.columns.MODEL_INPUTS` (its method is chosen per
  column type and reference size: normed Wasserstein distance for numeric and
  Jensen-Shannon distance for categorical columns on references above 1,000 rows,
  KS / chi-square p-values on smaller ones). The interval has data drift when the share of
  drifted columns reaches ``settings.drift_share_threshold``. A column that is entirely
  missing in the served rows but present in the reference (e.g. the feature store was
  down all day) counts as drifted.
* **Prediction drift** -- has the distribution of the served ``score`` moved? PSI
  (population stability index) of the champion's served scores against the reference's
  ``score`` column, drifted at or above ``settings.drift_prediction_threshold``. Canary
  rows are left out: a different model is expected to score differently, and the canary
  analysis judges it. Without reference scores the check is skipped with a note.
* **Performance** -- once chargeback labels arrive, PR-AUC and ROC-AUC of the served
  scores (same definitions as offline evaluation), overall and per variant.
* **Performance drift** -- labels arrive late, so this judges older days: the champion's
  served scores on the ``drift_performance_days`` transaction days that ended
  ``label_maturity_days`` before the interval, labelled with the chargebacks known by the
  interval's end (:func:`performance_check`). Drifted when their PR-AUC falls below the
  champion's PR-AUC on its drift reference times ``1 - drift_performance_drop``. This is what
  sees *concept* drift, where the inputs look the same but fraud no longer does.

:func:`compute_drift` answers them for one interval and writes Evidently's HTML report
and a ``drift.json`` summary under ``dt=YYYY-MM-DD``. :func:`decide` turns the history of
results into a retrain decision (debounce + cool-down, see there), and :class:`DriftLog`
keeps that history and the last trigger day between runs.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftline.core.columns import CATEGORICAL, LABEL, MODEL_INPUTS, NUMERIC
from driftline.core.interval import Interval
from driftline.core.settings import Settings

log = logging.getLogger(__name__)

#: Column of the served fraud probability (prediction log) and of reference scores.
SCORE = "score"
#: Join key between the prediction log and the labels.
TRANSACTION_ID = "transaction_id"
#: Prediction-log column naming the model variant that served the row.
VARIANT = "variant"
#: Prediction-log column naming the registered version that answered.
MODEL_VERSION = "model_version"
CHAMPION = "champion"
#: Evidently stat test of prediction drift (a distance: drifted at or above the threshold).
PREDICTION_METHOD = "psi"

STATUS_OK = "ok"
STATUS_INSUFFICIENT = "insufficient_data"

REPORT_HTML = "drift_report.html"
REPORT_JSON = "drift.json"
#: Seed of the deterministic down-sampling of large references.
_SAMPLE_SEED = 0


# --------------------------------------------------------------------------------------
# Result of one interval
# --------------------------------------------------------------------------------------


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
        performance: Label metrics (see :func:`compute_drift`), None without labels.
        performance_check: Result of :func:`performance_check` on matured days, if run.
        performance_drift: ``performance_check`` found the PR-AUC drop.
        column_scores: Per judged column: ``method``, ``threshold``, ``score``, ``drifted``.
        notes: Human-readable remarks (skipped checks, columns not judged, ...).
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

        The interval's own day for data or prediction drift; for performance drift alone,
        the newest matured day that was judged (labels lag the interval).
        """
        if self.dataset_drift or self.prediction_drift or not self.performance_check:
            return self.start_day
        return date.fromisoformat(str(self.performance_check["last_day"]))

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


def _as_result(item: DriftResult | Mapping[str, Any]) -> DriftResult:
    return item if isinstance(item, DriftResult) else DriftResult.from_dict(item)


# --------------------------------------------------------------------------------------
# compute_drift
# --------------------------------------------------------------------------------------


def _require_inputs(frame: pd.DataFrame, name: str) -> None:
    missing = [c for c in MODEL_INPUTS if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks model inputs {missing}")


def _model_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """The model inputs with stable dtypes: float numerics, str (or NaN) categoricals.

    The prediction log comes from JSON (a feature missing on every row is an all-null
    object column) and training sets from Parquet (maybe dictionary-encoded), so both
    sides are normalised before Evidently infers anything.
    """
    out = pd.DataFrame(index=frame.index)
    for name in NUMERIC:
        out[name] = pd.to_numeric(frame[name], errors="coerce").astype("float64")
    for name in CATEGORICAL:
        values = frame[name].astype("object")
        out[name] = values.where(values.isna(), values.astype(str))
    return out


def _scores(frame: pd.DataFrame) -> pd.Series:
    return pd.to_numeric(frame[SCORE], errors="coerce").astype("float64")


def _served_by(frame: pd.DataFrame, version: str | None) -> pd.Series:
    """Rows the champion answered (``version`` itself, when given)."""
    mask = pd.Series(True, index=frame.index)
    if VARIANT in frame.columns:
        mask &= frame[VARIANT] == CHAMPION
    if version is not None and MODEL_VERSION in frame.columns:
        mask &= frame[MODEL_VERSION].astype(str) == str(version)
    return mask


def _champion_scores(
    current: pd.DataFrame, notes: list[str], version: str | None = None
) -> pd.Series:
    """Served scores of the champion (NaN elsewhere): canary traffic and rows of an
    earlier champion (the day a promotion happened) do not count."""
    scores = _scores(current)
    champion = _served_by(current, version)
    if champion.any() and not champion.all():
        notes.append(
            f"prediction drift on {int(champion.sum())} rows of the champion "
            f"({int((~champion).sum())} canary or earlier-champion rows left out)"
        )
    return scores.where(champion)


def _score_block(y: np.ndarray, s: np.ndarray) -> dict[str, Any]:
    """Label metrics of one group, or a note when a metric is undefined (one class)."""
    positives = int(y.sum())
    if y.size == 0 or positives in (0, y.size):
        return {
            "rows": int(y.size),
            "positives": positives,
            "pr_auc": None,
            "roc_auc": None,
            "note": f"not enough labels: {y.size} labelled rows with {positives} positives; "
            "PR-AUC/ROC-AUC need both classes",
        }
    from driftline.training.evaluate import score_metrics

    return {**score_metrics(y, s), "rows": int(y.size), "positives": positives}


def _performance(current: pd.DataFrame, labels: pd.DataFrame) -> dict[str, Any]:
    """PR-AUC/ROC-AUC of the served scores on the labelled transactions of ``current``."""
    missing = [c for c in (TRANSACTION_ID, LABEL) if c not in labels.columns]
    if missing:
        raise ValueError(f"labels frame lacks columns {missing}")
    if current.empty:
        current = pd.DataFrame({TRANSACTION_ID: pd.Series(dtype=object), SCORE: []})
    lacking = [c for c in (TRANSACTION_ID, SCORE) if c not in current.columns]
    if lacking:
        raise ValueError(f"current frame lacks {lacking}, needed for label metrics")
    served = current[[TRANSACTION_ID, SCORE] + ([VARIANT] if VARIANT in current else [])]
    truth = labels[[TRANSACTION_ID, LABEL]].drop_duplicates(TRANSACTION_ID, keep="last")
    joined = served.merge(truth, on=TRANSACTION_ID, how="inner").dropna(subset=[SCORE, LABEL])

    def block(part: pd.DataFrame) -> dict[str, Any]:
        return _score_block(
            part[LABEL].to_numpy(dtype=np.int64), part[SCORE].to_numpy(dtype=np.float64)
        )

    result: dict[str, Any] = {
        "served_rows": len(current),
        "labelled_rows": len(joined),
        "label_coverage": len(joined) / len(current) if len(current) else 0.0,
        **block(joined),
    }
    if VARIANT in joined.columns and joined[VARIANT].nunique() > 1:
        result["by_variant"] = {
            str(variant): block(part) for variant, part in joined.groupby(VARIANT, sort=True)
        }
    return result


def performance_days(interval: Interval, settings: Settings) -> Interval:
    """The matured transaction days whose labels the run for ``interval`` judges.

    They end ``label_maturity_days`` before the interval starts and span
    ``drift_performance_days``.
    """
    end = interval.start.date() - timedelta(days=settings.label_maturity_days)
    return Interval.parse(end - timedelta(days=settings.drift_performance_days), end)


def performance_check(
    served: pd.DataFrame,
    frauds: set[str],
    *,
    days: Interval,
    reference_pr_auc: float | None,
    settings: Settings,
    version: str | None = None,
) -> dict[str, Any]:
    """PR-AUC of the champion's served scores on matured days against labels known now.

    Args:
        served: Prediction-log rows of ``days`` (any variant; only the champion's count).
        frauds: Transaction ids with a chargeback reported by now; every other served
            transaction counts as legitimate (as in training sets).
        days: The matured days ``served`` covers (see :func:`performance_days`).
        reference_pr_auc: The champion's PR-AUC on its reference days (None: no verdict).
        settings: ``drift_performance_drop`` and ``drift_min_positives``.
        version: Only rows this champion version answered count (None: any champion).

    Returns:
        ``first_day``, ``last_day``, ``rows``, ``positives``, ``pr_auc`` (None when a
        class is missing), ``reference_pr_auc``, ``floor``, ``drifted`` and ``note``.
    """
    rows = served[_served_by(served, version)] if len(served) else served
    labels = (
        rows[TRANSACTION_ID].isin(frauds).to_numpy(dtype=np.int64)
        if len(rows)
        else np.zeros(0, dtype=np.int64)
    )
    scores = _scores(rows).to_numpy() if len(rows) else np.zeros(0)
    block = _score_block(labels, scores)
    floor = (
        None
        if reference_pr_auc is None
        else reference_pr_auc * (1 - settings.drift_performance_drop)
    )
    result: dict[str, Any] = {
        "first_day": days.start.date().isoformat(),
        "last_day": (days.end.date() - timedelta(days=1)).isoformat(),
        "rows": block["rows"],
        "positives": block["positives"],
        "pr_auc": block["pr_auc"],
        "reference_pr_auc": reference_pr_auc,
        "floor": floor,
        "drifted": False,
    }
    if floor is None:
        result["note"] = "no reference PR-AUC for the champion: no performance verdict"
    elif block["positives"] < settings.drift_min_positives or block["pr_auc"] is None:
        result["note"] = (
            f"{block['positives']} labelled frauds on {days} < drift_min_positives "
            f"{settings.drift_min_positives}: no performance verdict"
        )
    else:
        result["drifted"] = bool(block["pr_auc"] < floor)
        result["note"] = (
            f"served PR-AUC {block['pr_auc']:.3f} on {days} vs floor {floor:.3f} "
            f"(offline {reference_pr_auc:.3f})"
        )
    return result


def _run_evidently(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    with_scores: bool,
    settings: Settings,
) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Run the Evidently report; return the snapshot and the per-column test outcomes."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    numeric = [c for c in NUMERIC if c in columns]
    categorical = [c for c in CATEGORICAL if c in columns]
    metrics: list[Any] = []
    if columns:
        metrics.append(DataDriftPreset(columns=columns, drift_share=settings.drift_share_threshold))
    if with_scores:
        numeric.append(SCORE)
        metrics.append(
            ValueDrift(
                column=SCORE,
                method=PREDICTION_METHOD,
                threshold=settings.drift_prediction_threshold,
            )
        )
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    wanted = numeric + categorical
    snapshot = Report(metrics, include_tests=True).run(
        Dataset.from_pandas(current[wanted], data_definition=definition),
        Dataset.from_pandas(reference[wanted], data_definition=definition),
    )
    summary = snapshot.dict()
    values = {m["id"]: m.get("value") for m in summary["metrics"]}
    outcomes: dict[str, dict[str, Any]] = {}
    for test in summary["tests"]:
        config = test["metric_config"]
        params = config["params"]
        if not str(params.get("type", "")).endswith(":ValueDrift"):
            continue
        value = values.get(config["metric_id"])
        outcomes[params["column"]] = {
            "method": params.get("method"),
            "threshold": params.get("threshold"),
            "score": float(value) if isinstance(value, int | float) else None,
            # Evidently's test fails exactly when its stat test reports drift.
            "drifted": str(test["status"]).upper().endswith("FAIL"),
        }
    return snapshot, outcomes


def _write_atomic(path: Path, write: Callable[[str], object]) -> None:
    """Call ``write(tmp_path)`` then move the file over ``path`` (readers never see half)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; reports are meant to be read by others
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    text = json.dumps(data, indent=2, sort_keys=True, default=str)
    _write_atomic(path, lambda tmp: Path(tmp).write_text(text + "\n", encoding="utf-8"))


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    interval: Interval,
    settings: Settings,
    *,
    labels: pd.DataFrame | None = None,
    performance: Mapping[str, Any] | None = None,
    report_dir: Path | None = None,
    champion_version: str | None = None,
) -> DriftResult:
    """Data drift, prediction drift and (with labels) performance of one interval.

    Args:
        reference: Reference rows with every model input and optionally ``score`` (e.g.
            the champion's training split, scored by the champion). Larger than
            ``drift_reference_max_rows`` is sampled down deterministically.
        current: The prediction log of ``interval`` (model inputs, ``score``,
            ``transaction_id``, ``variant``, ...).
        interval: The data interval ``current`` covers; names the report folder.
        settings: Thresholds (``drift_*``).
        labels: ``transaction_id`` and ``label`` of transactions whose labels arrived.
        performance: A :func:`performance_check` result to include (its ``drifted``
            flag becomes ``performance_drift``).
        champion_version: Prediction drift only on rows this version answered.
        report_dir: Root of the reports; ``{home}/monitoring/reports`` when None. The
            interval's ``dt=YYYY-MM-DD`` folder is overwritten on a rerun.

    Returns:
        The result, with the paths of ``drift_report.html`` (not written for an interval
        with insufficient data) and ``drift.json``. ``performance`` holds ``served_rows``,
        ``labelled_rows``, ``label_coverage``, ``rows``, ``positives``, ``pr_auc``,
        ``roc_auc`` (None plus a ``note`` when the labels hold a single class), the other
        offline metrics, and ``by_variant`` when champion and canary both have labels.

    Raises:
        ValueError: If either frame lacks a model input, the reference is empty, or
            ``labels`` lacks ``transaction_id``/``label``.
    """
    _require_inputs(reference, "reference")
    if len(current):  # a day with no predictions is an empty frame without columns
        _require_inputs(current, "current")
    if reference.empty:
        raise ValueError("reference frame is empty")
    day = interval.start.date()
    folder = (report_dir or settings.home / "monitoring" / "reports") / f"dt={day.isoformat()}"
    html_path, json_path = folder / REPORT_HTML, folder / REPORT_JSON
    notes: list[str] = []
    checked = dict(performance) if performance is not None else None
    extra: dict[str, Any] = {
        "performance": _performance(current, labels) if labels is not None else None,
        "performance_check": checked,
        "performance_drift": bool(checked and checked.get("drifted")),
    }

    if len(current) < settings.drift_min_rows:
        notes.append(
            f"insufficient data: {len(current)} served rows < drift_min_rows "
            f"{settings.drift_min_rows}; no drift verdict"
        )
        result = DriftResult(
            interval=str(interval),
            day=day.isoformat(),
            status=STATUS_INSUFFICIENT,
            rows=len(current),
            reference_rows=len(reference),
            drifted_columns=[],
            drift_share=0.0,
            dataset_drift=False,
            prediction_drift_score=None,
            prediction_drift=False,
            notes=notes,
            **extra,
            report_json=str(json_path),
        )
        html_path.unlink(missing_ok=True)  # a rerun must not leave a stale report behind
        _write_json(json_path, result.to_dict())
        return result

    if len(reference) > settings.drift_reference_max_rows:
        notes.append(f"reference sampled to {settings.drift_reference_max_rows} rows")
        reference = reference.sample(n=settings.drift_reference_max_rows, random_state=_SAMPLE_SEED)
    ref, cur = _model_inputs(reference), _model_inputs(current)

    # Evidently refuses empty columns; judge those here.
    judged, missing_served = [], []
    for name in MODEL_INPUTS:
        if ref[name].notna().any() and cur[name].notna().any():
            judged.append(name)
        elif ref[name].notna().any():
            missing_served.append(name)
        else:
            notes.append(f"{name}: empty in the reference, not judged")
    if missing_served:
        notes.append(f"missing on every served row, counted as drifted: {missing_served}")

    with_scores = False
    if SCORE not in reference.columns or not reference[SCORE].notna().any():
        notes.append("prediction drift skipped: the reference has no scores")
    elif SCORE not in current.columns:
        notes.append("prediction drift skipped: the served rows have no scores")
    else:
        ref[SCORE] = _scores(reference)
        cur[SCORE] = _champion_scores(current, notes, champion_version)
        with_scores = bool(cur[SCORE].notna().any())
        if not with_scores:
            notes.append("prediction drift skipped: no served champion scores")

    snapshot, outcomes = _run_evidently(ref, cur, judged, with_scores, settings)
    column_scores = {name: outcomes[name] for name in judged}
    for name in missing_served:
        column_scores[name] = {
            "method": "all missing in current",
            "threshold": None,
            "score": None,
            "drifted": True,
        }
    drifted = [name for name in MODEL_INPUTS if column_scores.get(name, {}).get("drifted")]
    share = len(drifted) / len(column_scores) if column_scores else 0.0
    score_outcome = outcomes.get(SCORE) if with_scores else None

    result = DriftResult(
        interval=str(interval),
        day=day.isoformat(),
        status=STATUS_OK,
        rows=len(current),
        reference_rows=len(reference),
        drifted_columns=drifted,
        drift_share=share,
        dataset_drift=share >= settings.drift_share_threshold,
        prediction_drift_score=score_outcome["score"] if score_outcome else None,
        prediction_drift=bool(score_outcome and score_outcome["drifted"]),
        **extra,
        column_scores=column_scores,
        notes=notes,
        report_html=str(html_path),
        report_json=str(json_path),
    )
    _write_atomic(html_path, snapshot.save_html)
    _write_json(json_path, result.to_dict())
    log.info(
        "drift %s: %d/%d columns drifted (%.2f), prediction drift %s",
        interval,
        len(drifted),
        len(column_scores),
        share,
        result.prediction_drift_score,
    )
    return result


# --------------------------------------------------------------------------------------
# Retrain decision
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """Whether drift should trigger a retrain now, and why.

    Attributes:
        trigger: Start a retrain.
        reason: One sentence for logs, tags and the Airflow UI.
        window_start: First day of the current drift streak (set whenever today drifted,
            even when debounce or cool-down hold the trigger back).
        window_end: Day after today's interval (exclusive), with ``window_start``.
    """

    trigger: bool
    reason: str
    window_start: date | None = None
    window_end: date | None = None

    @property
    def window(self) -> Interval | None:
        """The drift window as an :class:`Interval`, when there is one."""
        if self.window_start is None or self.window_end is None:
            return None
        return Interval.parse(self.window_start, self.window_end)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO strings)."""
        return {
            "trigger": self.trigger,
            "reason": self.reason,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
        }


def _latest_by_day(history: Iterable[DriftResult | Mapping[str, Any]]) -> dict[date, DriftResult]:
    """One result per day; a later entry for the same day replaces an earlier one."""
    by_day: dict[date, DriftResult] = {}
    for item in history:
        result = _as_result(item)
        by_day[result.start_day] = result
    return by_day


def _describe(result: DriftResult) -> str:
    parts = []
    if result.dataset_drift:
        parts.append(f"{len(result.drifted_columns)} drifted inputs {result.drifted_columns}")
    if result.prediction_drift:
        parts.append(f"score PSI {result.prediction_drift_score:.3f}")
    if result.performance_drift and result.performance_check:
        check = result.performance_check
        parts.append(
            f"served PR-AUC {check['pr_auc']:.3f} below {check['floor']:.3f} "
            f"on {check['first_day']}..{check['last_day']}"
        )
    return " and ".join(parts)


def train_split_end(window_end: date, settings: Settings) -> date:
    """First day *not* in the train split of a training set whose label cut-off is
    ``window_end`` (the valid and holdout days and the unlabelled tail follow it)."""
    tail = settings.label_maturity_days + settings.holdout_days + settings.valid_days
    return window_end - timedelta(days=tail)


def _label_wait(window_start: date, window_end: date, settings: Settings) -> str | None:
    """Why a retrain must still wait for labels of the drift, or None when it need not."""
    needed = settings.retrain_min_drift_days
    have = (train_split_end(window_end, settings) - window_start).days
    if needed == 0 or have >= needed:
        return None
    ready = (
        window_start + timedelta(days=needed) + (window_end - train_split_end(window_end, settings))
    )
    return (
        f"waiting for labels: a retrain now would train on {max(have, 0)} labelled day(s) "
        f"of the drift (since {window_start}), retrain_min_drift_days is {needed}; "
        f"possible from the interval of {ready - timedelta(days=1)} on"
    )


def decide(
    history: Sequence[DriftResult | Mapping[str, Any]],
    *,
    last_trigger_day: date | None,
    today: Interval,
    settings: Settings,
) -> Decision:
    """Decide whether drift seen up to ``today`` should trigger a retrain (pure, no I/O).

    Drift alone is noisy: one odd day (a holiday, a marketing campaign, a small sample)
    must not start a retrain, and a drift that persists must start exactly one, not one
    per day while the retrain and promotion are still running. Three rules ensure that:

    * **Evidence of today.** Only an interval whose own result drifted can trigger. A day
      with no result or with insufficient data never triggers -- but it does not break a
      streak either: it is skipped, as is a day missing from the history.
    * **Debounce.** The last ``drift_debounce_days`` results with enough data (up to and
      including today) must all have drifted.
    * **Labels.** A retrain only helps once the training split holds labelled days of
      the drift: the trigger waits until at least ``retrain_min_drift_days`` days since
      the streak's first evidence fall before :func:`train_split_end` of today's end.
      The streak and its window are kept meanwhile; the wait ends by itself.
    * **Cool-down.** No trigger within ``drift_cooldown_days`` after ``last_trigger_day``
      (nor before it, when an older interval is re-run), and results up to the last trigger
      day are not counted again: after the cool-down a new trigger needs a new streak of
      drift observed after the last trigger.

    Args:
        history: Results of past intervals and today's (any order; for a day listed twice
            the later entry wins). Results after ``today`` are ignored.
        last_trigger_day: Day the last retrain was triggered, None if never.
        today: The interval being decided.
        settings: ``drift_debounce_days`` and ``drift_cooldown_days``.

    Returns:
        The decision; ``window_start`` is the first drifted day of the streak (after the
        last trigger) and ``window_end`` the end of ``today``.
    """
    day = today.start.date()
    by_day = _latest_by_day(history)
    result = by_day.get(day)
    if result is None:
        return Decision(False, f"no drift result for {day}: no decision")
    if not result.sufficient:
        return Decision(False, f"{day}: insufficient data ({result.rows} rows), no decision")
    if not result.drifted:
        return Decision(False, f"{day}: no drift (drift share {result.drift_share:.2f})")

    if last_trigger_day is not None and day <= last_trigger_day:
        return Decision(
            False,
            f"{day}: drift ({_describe(result)}) but a retrain was already triggered on "
            f"{last_trigger_day}",
        )
    decisive = [
        r
        for d, r in sorted(by_day.items())
        if d <= day and r.sufficient and (last_trigger_day is None or d > last_trigger_day)
    ]
    streak: list[DriftResult] = []
    for past in reversed(decisive):
        if not past.drifted:
            break
        streak.append(past)
    window_start = min(r.evidence_day for r in streak)
    window_end = today.end.date()
    if last_trigger_day is not None:
        next_allowed = last_trigger_day + timedelta(days=settings.drift_cooldown_days)
        if day < next_allowed:
            return Decision(
                False,
                f"{day}: drift ({_describe(result)}) but a retrain was triggered on "
                f"{last_trigger_day}; cool-down of {settings.drift_cooldown_days} days, "
                f"next trigger possible on {next_allowed}",
                window_start,
                window_end,
            )
    needed = settings.drift_debounce_days
    if len(streak) < needed:
        return Decision(
            False,
            f"{day}: drift ({_describe(result)}) on {len(streak)} of {needed} consecutive "
            "intervals needed (debounce)",
            window_start,
            window_end,
        )
    waiting = _label_wait(window_start, window_end, settings)
    if waiting is not None:
        return Decision(
            False,
            f"{day}: drift ({_describe(result)}) confirmed on {len(streak)} intervals; {waiting}",
            window_start,
            window_end,
        )
    return Decision(
        True,
        f"drift on {len(streak)} consecutive intervals since {window_start} "
        f"(today: {_describe(result)})",
        window_start,
        window_end,
    )


# --------------------------------------------------------------------------------------
# Persisted state
# --------------------------------------------------------------------------------------


@dataclass
class DriftLog:
    """Drift results per day and the last retrain trigger, kept in one JSON file.

    The file is ``{settings.home}/monitoring/drift_log.json``. Recording a day replaces
    that day's entry (reruns and backfills are idempotent), and recording a trigger never
    moves ``last_trigger_day`` back in time (an older interval re-run cannot erase a newer
    trigger). Writes are atomic; concurrent writers are not coordinated (one monitoring
    run at a time, as the DAG schedules it).
    """

    path: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    triggers: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_trigger_day: date | None = None

    @staticmethod
    def path_for(settings: Settings) -> Path:
        """Where the log of ``settings`` lives."""
        return settings.home / "monitoring" / "drift_log.json"

    @classmethod
    def load(cls, settings: Settings) -> DriftLog:
        """Read the log, or an empty one when none was written yet."""
        path = cls.path_for(settings)
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        last = data.get("last_trigger_day")
        return cls(
            path,
            results=dict(data.get("results", {})),
            triggers=dict(data.get("triggers", {})),
            last_trigger_day=date.fromisoformat(last) if last else None,
        )

    def record(self, result: DriftResult) -> None:
        """Store ``result`` as its day's entry, replacing any earlier one."""
        self.results[result.day] = result.to_dict()

    def record_trigger(self, day: date, decision: Decision) -> None:
        """Remember that ``decision`` triggered a retrain on ``day``.

        Raises:
            ValueError: If ``decision`` did not trigger.
        """
        if not decision.trigger:
            raise ValueError("only a triggering decision can be recorded as a trigger")
        self.triggers[day.isoformat()] = decision.to_dict()
        if self.last_trigger_day is None or day > self.last_trigger_day:
            self.last_trigger_day = day

    def history(self, *, until: date | None = None) -> list[DriftResult]:
        """Stored results, oldest first, optionally only those starting on/before ``until``."""
        results = [DriftResult.from_dict(self.results[key]) for key in sorted(self.results)]
        return [r for r in results if until is None or r.start_day <= until]

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON content."""
        return {
            "results": {key: self.results[key] for key in sorted(self.results)},
            "triggers": {key: self.triggers[key] for key in sorted(self.triggers)},
            "last_trigger_day": self.last_trigger_day.isoformat()
            if self.last_trigger_day
            else None,
        }

    def save(self) -> Path:
        """Write the log atomically; return its path."""
        _write_json(self.path, self.to_dict())
        return self.path
