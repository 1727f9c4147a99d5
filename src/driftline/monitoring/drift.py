"""Drift of the served traffic against the champion's training data (computation only).

Three questions are asked of one data interval of the prediction log
(:func:`driftline.data.predictions.read_predictions`), each against the *reference*
(the newest labelled week of the champion's training set, scored by the champion; see
:mod:`driftline.monitoring.reference`):

* **Data drift** -- has the distribution of the model inputs moved? Evidently tests each
  column of :data:`~driftline.core.columns.MODEL_INPUTS` with a fixed statistic (normed
  Wasserstein distance for numeric, Jensen-Shannon distance for categorical inputs)
  against a threshold *calibrated on the reference's own no-drift variability*: the
  statistic between each reference day and the other days, its
  ``drift_threshold_quantile`` (:mod:`~driftline.monitoring.calibration`). The interval
  has data drift when the share of drifted columns reaches
  ``settings.drift_share_threshold``; the result reports that share next to the
  no-drift baseline (the share on reference days judged the same way). A column that is
  entirely missing in the served rows but present in the reference counts as drifted.
* **Fallback rows are set apart.** Rows scored with fallback features (the feature store
  was unavailable: ``features_fallback`` in the log) describe the outage, not the
  traffic: they are left out of every check and counted in ``fallback_rows``.
* **Prediction drift** -- has the distribution of the served ``score`` moved? PSI
  (population stability index) of the champion's served scores against the reference's
  ``score`` column, drifted at or above ``settings.drift_prediction_threshold``. Canary
  rows are left out: a different model is expected to score differently, and the canary
  analysis judges it. Without reference scores the check is skipped with a note.
* **Performance** -- once chargeback labels arrive, PR-AUC and ROC-AUC of the served
  scores (same definitions as offline evaluation), overall and per variant.
* **Performance drift** -- labels arrive late, so this judges older days: the champion's
  served scores on the ``drift_performance_days`` transaction days that ended
  ``label_maturity_days`` before the interval (:func:`performance_check`). Like with
  like: the served rows and the reference rows are labelled by the same rule (frauds
  reported within ``label_maturity_days`` of the transaction's day), and only rows of
  the same kind count (the champion's, not fallback; the reference's validation and
  holdout days). ``degraded`` only when the served PR-AUC is below the floor (reference
  times ``1 - drift_performance_drop``) *and* significantly below the reference (the
  bootstrap interval of the difference lies below zero); otherwise, with a PR-AUC
  below the floor or too few frauds, ``insufficient_evidence``. This is what sees
  *concept* drift, where the inputs look the same but fraud no longer does.

**One PSI.** The prediction-drift PSI is :func:`driftline.core.stats.psi` (10 quantile
bins of the reference scores, empty bins floored at 1e-4), the same function the canary
analysis and the offline candidate evaluation use, so a score PSI means the same number
everywhere. It runs inside the Evidently report as a registered stat test
(:data:`PREDICTION_METHOD`), so the HTML report shows that number too; Evidently's own
``"psi"`` (Sturges-rule equal-width bins over both samples) is not used. The threshold
keeps its meaning: drifted at or above ``drift_prediction_threshold``.

:func:`measure_drift` answers the questions for one interval without writing anything;
:func:`~driftline.monitoring.drift_report.write_drift_report` then writes Evidently's HTML
report and a ``drift.json`` summary under ``dt=YYYY-MM-DD`` (:func:`compute_drift` does
both). :func:`~driftline.monitoring.policy.decide` turns the history of results into a
retrain decision, and :class:`~driftline.monitoring.drift_log.DriftLog` keeps that history
and the last trigger day between runs.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftline.core.columns import CATEGORICAL, LABEL, MODEL_INPUTS, NUMERIC
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.core.stats import psi
from driftline.monitoring.calibration import Calibration, calibrate, chunk_labels
from driftline.monitoring.drift_report import report_folder, write_drift_report
from driftline.monitoring.result import (
    STATUS_INSUFFICIENT,
    STATUS_OK,
    DriftMeasurement,
    DriftResult,
)

log = logging.getLogger(__name__)

#: Column of the served fraud probability (prediction log) and of reference scores.
SCORE = "score"
#: Join key between the prediction log and the labels.
TRANSACTION_ID = "transaction_id"
#: Prediction-log column naming the model variant that served the row.
VARIANT = "variant"
#: Prediction-log column naming the registered version that answered.
MODEL_VERSION = "model_version"
#: Prediction-log flag of a row scored with fallback features (feature store unavailable).
FALLBACK = "features_fallback"
CHAMPION = "champion"
#: Evidently stat test of prediction drift (a distance: drifted at or above the threshold).
#: Evidently stat test of prediction drift: :func:`driftline.core.stats.psi`, registered
#: under this name by :func:`_register_prediction_psi` (a distance: drifted at or above
#: the threshold).
PREDICTION_METHOD = "driftline_psi"

#: Seed of the deterministic down-sampling of large references.
_SAMPLE_SEED = 0


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


def model_inputs(frame: pd.DataFrame) -> pd.DataFrame:
    """The model inputs of prediction-log rows, typed as a model frame expects."""
    return _model_inputs(frame)


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


#: :func:`performance_check` verdicts.
PERFORMANCE_OK = "ok"
PERFORMANCE_DEGRADED = "degraded"
PERFORMANCE_INSUFFICIENT = "insufficient_evidence"


def _not_fallback(frame: pd.DataFrame) -> pd.Series:
    """Rows scored with the features the store served (not fallback features)."""
    if FALLBACK not in frame.columns:
        return pd.Series(True, index=frame.index)
    flags = frame[FALLBACK]
    return ~flags.eq(True)  # a missing flag (older log lines) is not a fallback


def champion_rows(frame: pd.DataFrame, version: str | None) -> pd.DataFrame:
    """The rows ``version`` answered as champion with the features the store served."""
    if not len(frame):
        return frame
    rows = frame[_served_by(frame, version)]
    return rows[_not_fallback(rows)]


def performance_check(
    served: pd.DataFrame,
    frauds: set[str],
    *,
    days: Interval,
    reference_pr_auc: float | None,
    settings: Settings,
    version: str | None = None,
    reference: tuple[np.ndarray, np.ndarray]
    | tuple[np.ndarray, np.ndarray, np.ndarray | None]
    | None = None,
    label_rule: str = "",
    reference_source: str = "",
) -> dict[str, Any]:
    """Is the champion's served PR-AUC or ROC-AUC on matured days significantly below its
    reference?

    Compares like with like: ``frauds`` and the reference labels should follow the same
    label maturity (see :func:`driftline.monitoring.served.frauds_known_within`), and
    only the champion's rows scored with stored features count (fallback rows are
    counted apart). The verdict:

    * ``insufficient_evidence`` -- no reference, fewer than ``drift_min_positives``
      effective labelled frauds, or a served PR-AUC below the floor whose difference
      from the reference is not significant: the upper end of the bootstrap interval
      (``drift_confidence``, ``drift_bootstrap_samples``, fixed seed) of served minus
      reference PR-AUC is not below zero;
    * ``degraded`` (``drifted``) -- the served PR-AUC is below the floor (the reference
      PR-AUC times ``1 - drift_performance_drop``: the drop matters) *and* significantly
      below the reference; or the same holds for the ROC-AUC (reference rows needed; its
      floor: the reference's miss rate, 1 - ROC-AUC, grown by ``1 / (1 -
      drift_performance_drop)``). ``degraded_on`` names which;
    * ``ok`` -- both are at or above their floors.

    Why both: a new fraud pattern's frauds are scored low, among the legitimate rows --
    a ranking failure ROC-AUC measures with far less window-to-window variance than
    PR-AUC, whose value at 2% fraud rests on the few top-scored rows. Replayed on the
    scenario matrix's kept cells (issue 12), the PR-AUC check alone caught the new fraud
    pattern in none of seeds 23, 31 and 47 (1 significant window each); with the
    ROC-AUC beside it seeds 23 and 47 confirmed (2 independent windows, on 01-27 and
    01-28) and seed 31 did not (significant windows 01-21..22, 01-22..23, 01-25..26 and
    01-27..28, never two independent ones in a row), while the no-drift seeds 11, 31 and
    47 and the mild shift of seed 31 flagged none of 48 windows (the PR-AUC check
    alone at ``drift_confidence`` flagged 3 there). Where both are judged, each
    interval is at the Bonferroni level ``1 - (1 - drift_confidence) / 2``: a window's
    false-alarm rate stays that of one test (a lucky reference at 90% each made 2 of 8
    noise windows "degraded" in the unit test).

    Frauds come in bursts of one card (card testing), one account or one compromised
    merchant, so the interval is a cluster bootstrap over fraud campaigns
    (:func:`driftline.core.evidence.row_groups`: accounts, merged where their frauds
    share a compromised merchant) where the rows carry ``user_id`` (and ``merchant_id``) -- the
    served rows from the prediction log, the reference rows when the reference stores
    them -- and the frauds counted against ``drift_min_positives`` are the distinct
    accounts with a labelled fraud (``fraud_accounts``;
    :func:`driftline.core.evidence.fraud_accounts`). A reference without the columns is
    resampled by rows (noted): its side of the interval is then too narrow.

    Args:
        served: Prediction-log rows of ``days`` (any variant; only the champion's count).
        frauds: Transaction ids with a chargeback known under the check's label rule;
            every other served transaction counts as legitimate (as in training sets).
        days: The matured days ``served`` covers (see :func:`performance_days`).
        reference_pr_auc: The champion's reference PR-AUC, used when ``reference`` is
            None (it is then taken as exact: only the served side's interval counts).
        settings: ``drift_performance_drop``, ``drift_min_positives`` and the bootstrap.
        version: Only rows this champion version answered count (None: any champion).
        reference: ``(labels, scores)`` or ``(labels, scores, groups)`` of the reference
            rows the champion was not fitted on, labelled under the same rule (groups:
            their accounts, or None); the reference PR-AUC and the difference's
            interval come from them.
        label_rule: How the labels were chosen (recorded).
        reference_source: Which days ``reference`` holds (recorded).

    Returns:
        ``first_day``, ``last_day``, ``rows``, ``positives``, ``fraud_accounts``
        (distinct accounts with a fraud, or rows without accounts), ``clustered`` (the
        interval resampled campaigns on both sides), ``fallback_rows``,
        ``pr_auc``, ``reference_pr_auc``, ``reference_rows``, ``reference_positives``,
        ``floor``, ``difference`` (estimate and interval), the same for the ROC-AUC
        (``roc_auc``, ``reference_roc_auc``, ``roc_floor``, ``roc_difference``,
        ``roc_drop``, ``roc_below_floor``), ``degraded_on``, ``verdict``, ``drifted``,
        ``label_rule``, ``reference_source`` and ``note``.
    """
    from driftline.core.evidence import (
        Estimate,
        difference_interval,
        fraud_accounts,
        pr_auc_interval,
        row_groups,
    )

    rows = served[_served_by(served, version)] if len(served) else served
    fallback = int((~_not_fallback(rows)).sum()) if len(rows) else 0
    rows = rows[_not_fallback(rows)] if len(rows) else rows
    labels = (
        rows[TRANSACTION_ID].isin(frauds).to_numpy(dtype=np.int64)
        if len(rows)
        else np.zeros(0, dtype=np.int64)
    )
    scores = _scores(rows).to_numpy() if len(rows) else np.zeros(0)
    groups = row_groups(rows, labels)
    block = _score_block(labels, scores)
    accounts = fraud_accounts(rows, labels)
    samples, confidence = settings.drift_bootstrap_samples, settings.drift_confidence
    reference_rows = reference_positives = ref_groups = None
    if reference is not None:
        ref_labels, ref_scores = reference[0], reference[1]
        ref_groups = reference[2] if len(reference) > 2 else None
        reference_rows, reference_positives = int(ref_labels.size), int(ref_labels.sum())
        reference_pr_auc = (
            None
            if reference_positives in (0, reference_rows)
            else _score_block(ref_labels, ref_scores)["pr_auc"]
        )
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
        "fraud_accounts": accounts,
        "clustered": groups is not None and (reference is None or ref_groups is not None),
        "fallback_rows": fallback,
        "pr_auc": block["pr_auc"],
        "reference_pr_auc": reference_pr_auc,
        "reference_rows": reference_rows,
        "reference_positives": reference_positives,
        "floor": floor,
        "difference": None,
        "verdict": PERFORMANCE_INSUFFICIENT,
        "drifted": False,
        "degraded_on": [],
        "label_rule": label_rule,
        "reference_source": reference_source,
    }
    if floor is None or reference_pr_auc is None:
        result["note"] = "no reference PR-AUC for the champion: insufficient evidence"
        return result
    if accounts < settings.drift_min_positives or block["pr_auc"] is None:
        result["note"] = (
            f"{accounts} labelled frauds ({block['positives']} rows) on {days} < "
            f"drift_min_positives {settings.drift_min_positives}: insufficient evidence"
        )
        return result
    served_pr = float(block["pr_auc"])
    # Two tests (PR-AUC and ROC-AUC) where reference rows allow both: each at the
    # Bonferroni level, so a window's false-alarm rate stays that of one test.
    confidence = 1.0 - (1.0 - confidence) / (2 if reference is not None else 1)
    if reference is not None:
        estimate = difference_interval(
            (labels, scores),
            (ref_labels, ref_scores),
            samples=samples,
            confidence=confidence,
            groups_a=groups,
            groups_b=ref_groups,
        )
    else:
        alone = pr_auc_interval(
            labels, scores, samples=samples, confidence=confidence, groups=groups
        )
        estimate = Estimate(
            served_pr - reference_pr_auc,
            None if alone.low is None else alone.low - reference_pr_auc,
            None if alone.high is None else alone.high - reference_pr_auc,
            alone.confidence,
            alone.positives,
            alone.clustered,
        )
    result["difference"] = estimate.to_dict()
    ranking = _ranking_check(
        (labels, scores, groups),
        None if reference is None else (ref_labels, ref_scores, ref_groups),
        settings,
        confidence,
    )
    result.update(ranking)
    interval = (
        f"served - reference {estimate.value:+.3f}, interval "
        f"[{estimate.low:+.3f}, {estimate.high:+.3f}] at {estimate.confidence:.0%}"
        if estimate.value is not None and estimate.low is not None and estimate.high is not None
        else "no interval"
    )
    head = (
        f"served PR-AUC {served_pr:.3f} on {days} ({block['positives']} frauds, "
        f"{accounts} accounts) vs reference {reference_pr_auc:.3f} (floor {floor:.3f}); "
        f"{interval}{'' if result['clustered'] else ' (rows resampled, not campaigns)'}"
    )
    pr_drop = served_pr < floor and estimate.below_zero
    result["degraded_on"] = [
        name for name, dropped in (("pr_auc", pr_drop), ("roc_auc", ranking["roc_drop"])) if dropped
    ]
    head = f"{head}; {ranking['roc_note']}"
    if result["degraded_on"]:
        result["verdict"] = PERFORMANCE_DEGRADED
        result["drifted"] = True
        result["note"] = f"{head}: significant drop ({' and '.join(result['degraded_on'])})"
    elif served_pr >= floor and not ranking["roc_below_floor"]:
        result["verdict"] = PERFORMANCE_OK
        result["note"] = f"{head}: no drop"
    else:
        result["note"] = f"{head}: below a floor, not significant: insufficient evidence"
    return result


def _ranking_check(
    served: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    reference: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None,
    settings: Settings,
    confidence: float,
) -> dict[str, Any]:
    """The ROC-AUC half of :func:`performance_check` (served against reference rows).

    The floor is the reference's miss rate (1 - ROC-AUC: the share of fraud/legitimate
    pairs ranked wrong) grown by ``1 / (1 - drift_performance_drop)``, the same relative
    change the PR-AUC floor allows; the drop counts when the served ROC-AUC is below it
    and the cluster-bootstrap interval of the difference (same resamples as the PR-AUC's,
    at ``confidence``) lies below zero. Without reference rows: no ROC verdict.
    """
    from driftline.core.evidence import difference_interval, roc_auc

    labels, scores, groups = served
    served_roc = roc_auc(labels, scores) if labels.size else None
    out: dict[str, Any] = {
        "roc_auc": served_roc,
        "reference_roc_auc": None,
        "roc_floor": None,
        "roc_difference": None,
        "roc_drop": False,
        "roc_below_floor": False,
        "roc_note": "no ROC-AUC verdict (no reference rows)",
    }
    if reference is None or served_roc is None:
        return out
    ref_labels, ref_scores, ref_groups = reference
    ref_roc = roc_auc(ref_labels, ref_scores)
    if ref_roc is None:
        return out
    floor = 1.0 - (1.0 - ref_roc) / (1.0 - settings.drift_performance_drop)
    estimate = difference_interval(
        (labels, scores),
        (ref_labels, ref_scores),
        samples=settings.drift_bootstrap_samples,
        confidence=confidence,
        groups_a=groups,
        groups_b=ref_groups,
        metric="roc_auc",
    )
    below = served_roc < floor
    out.update(
        reference_roc_auc=ref_roc,
        roc_floor=floor,
        roc_difference=estimate.to_dict(),
        roc_below_floor=below,
        roc_drop=below and estimate.below_zero,
        roc_note=(
            f"ROC-AUC {served_roc:.3f} vs {ref_roc:.3f} (floor {floor:.3f}), interval "
            f"[{estimate.low:+.3f}, {estimate.high:+.3f}]"
            if estimate.low is not None and estimate.high is not None
            else f"ROC-AUC {served_roc:.3f} vs {ref_roc:.3f}: no interval"
        ),
    )
    return out


def _run_evidently(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    with_scores: bool,
    settings: Settings,
    calibration: Calibration | None = None,
) -> tuple[Any, dict[str, dict[str, Any]]]:
    """Run the Evidently report; return the snapshot and the per-column test outcomes.

    With a ``calibration`` each input is judged by its calibrated method and threshold;
    without one (a reference too small to split) Evidently's defaults apply.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift
    from evidently.presets import DataDriftPreset

    numeric = [c for c in NUMERIC if c in columns]
    categorical = [c for c in CATEGORICAL if c in columns]
    metrics: list[Any] = []
    if columns:
        calibrated: dict[str, Any] = {}
        if calibration is not None:
            calibrated = {
                "per_column_method": {c: calibration.methods[c] for c in columns},
                "per_column_threshold": {c: calibration.thresholds[c] for c in columns},
            }
        metrics.append(
            DataDriftPreset(
                columns=columns, drift_share=settings.drift_share_threshold, **calibrated
            )
        )
    if with_scores:
        numeric.append(SCORE)
        metrics.append(
            ValueDrift(
                column=SCORE,
                method=_register_prediction_psi(),
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


@functools.cache
def _register_prediction_psi() -> str:
    """Register :func:`driftline.core.stats.psi` as an Evidently stat test; its name.

    Runs once, on the first drift check (not at import). ``ValueDrift`` always passes
    ``drift_prediction_threshold``, so the stat test has no threshold of its own.
    """
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    def score_psi(
        reference: pd.Series, current: pd.Series, _type: Any, threshold: float
    ) -> tuple[float, bool]:
        value = psi(reference.to_numpy(dtype=np.float64), current.to_numpy(dtype=np.float64))
        return value, value >= threshold

    stat_test = StatTest(
        name=PREDICTION_METHOD,
        display_name="PSI (driftline.core.stats.psi, quantile bins)",
        allowed_feature_types=[ColumnType.Numerical],
    )
    register_stattest(stat_test, score_psi)
    return PREDICTION_METHOD


def _insufficient(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    interval: Interval,
    settings: Settings,
    notes: list[str],
    extra: dict[str, Any],
) -> DriftMeasurement:
    """The measurement of an interval with fewer than ``drift_min_rows`` served rows."""
    notes.append(
        f"insufficient data: {len(current)} served rows < drift_min_rows "
        f"{settings.drift_min_rows}; no drift verdict"
    )
    result = DriftResult(
        interval=str(interval),
        day=interval.start.date().isoformat(),
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
    )
    return DriftMeasurement(result)


def _judgeable(
    ref: pd.DataFrame, cur: pd.DataFrame, notes: list[str]
) -> tuple[list[str], list[str]]:
    """Model inputs Evidently can judge, and those missing on every served row.

    Evidently refuses empty columns, so those are judged here: missing in the served rows
    only counts as drifted, empty in the reference is not judged (both get a note).
    """
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
    return judged, missing_served


def _add_scores(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    reference: pd.DataFrame,
    current: pd.DataFrame,
    notes: list[str],
    champion_version: str | None,
) -> bool:
    """Add the ``score`` columns prediction drift compares (in place); whether it can run."""
    if SCORE not in reference.columns or not reference[SCORE].notna().any():
        notes.append("prediction drift skipped: the reference has no scores")
        return False
    if SCORE not in current.columns:
        notes.append("prediction drift skipped: the served rows have no scores")
        return False
    ref[SCORE] = _scores(reference)
    cur[SCORE] = _champion_scores(current, notes, champion_version)
    if not cur[SCORE].notna().any():
        notes.append("prediction drift skipped: no served champion scores")
        return False
    return True


def _missing_column_score() -> dict[str, Any]:
    """The column score of a model input missing on every served row."""
    return {"method": "all missing in current", "threshold": None, "score": None, "drifted": True}


def measure_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    interval: Interval,
    settings: Settings,
    *,
    labels: pd.DataFrame | None = None,
    performance: Mapping[str, Any] | None = None,
    champion_version: str | None = None,
) -> DriftMeasurement:
    """Data drift, prediction drift and (with labels) performance of one interval.

    Computes only: nothing is written (see
    :func:`~driftline.monitoring.drift_report.write_drift_report`).

    Args:
        reference: Reference rows with every model input and optionally ``score`` (e.g.
            the champion's training split, scored by the champion). Larger than
            ``drift_reference_max_rows`` is sampled down deterministically.
        current: The prediction log of ``interval`` (model inputs, ``score``,
            ``transaction_id``, ``variant``, ...).
        interval: The data interval ``current`` covers.
        settings: Thresholds (``drift_*``).
        labels: ``transaction_id`` and ``label`` of transactions whose labels arrived.
        performance: A :func:`performance_check` result to include (its ``drifted``
            flag becomes ``performance_drift``).
        champion_version: Prediction drift only on rows this version answered.

    Returns:
        The result (no report paths yet) and Evidently's snapshot (None for an interval
        with insufficient data). ``performance`` holds ``served_rows``,
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
    notes: list[str] = []
    checked = dict(performance) if performance is not None else None
    extra: dict[str, Any] = {
        "performance": _performance(current, labels) if labels is not None else None,
        "performance_check": checked,
        "performance_drift": bool(checked and checked.get("drifted")),
    }
    fallback = int((~_not_fallback(current)).sum()) if len(current) else 0
    extra["fallback_rows"] = fallback
    if fallback:
        notes.append(
            f"{fallback} of {len(current)} rows scored with fallback features: left out of "
            "drift (they describe the feature store's outage, not the traffic)"
        )
        current = current[_not_fallback(current)]
    if len(current) < settings.drift_min_rows:
        return _insufficient(reference, current, interval, settings, notes, extra)

    if len(reference) > settings.drift_reference_max_rows:
        notes.append(f"reference sampled to {settings.drift_reference_max_rows} rows")
        reference = reference.sample(n=settings.drift_reference_max_rows, random_state=_SAMPLE_SEED)
    ref, cur = _model_inputs(reference), _model_inputs(current)
    judged, missing_served = _judgeable(ref, cur, notes)
    with_scores = _add_scores(ref, cur, reference, current, notes, champion_version)
    chunks, chunking = chunk_labels(reference, settings)
    calibration = calibrate(ref, chunks, judged, chunking, settings)
    if calibration is None:
        notes.append("reference too small to calibrate thresholds: Evidently's defaults used")
    elif calibration.chunking != "day":
        notes.append(
            "the reference does not date its rows: thresholds calibrated on random chunks "
            "(sampling noise only, day-to-day variability not measured)"
        )
    extra["calibration"] = calibration.summary() if calibration is not None else None

    snapshot, outcomes = _run_evidently(ref, cur, judged, with_scores, settings, calibration)
    column_scores = {name: outcomes[name] for name in judged}
    column_scores.update({name: _missing_column_score() for name in missing_served})
    drifted = [name for name in MODEL_INPUTS if column_scores.get(name, {}).get("drifted")]
    share = len(drifted) / len(column_scores) if column_scores else 0.0
    score_outcome = outcomes.get(SCORE) if with_scores else None
    if calibration is not None:
        notes.append(
            f"drift share {share:.2f} ({len(drifted)} of {len(column_scores)} inputs) vs "
            f"no-drift baseline {calibration.baseline_share:.2f} (largest "
            f"{calibration.baseline_share_max:.2f}) over {calibration.chunks} reference "
            f"{'days' if calibration.chunking == 'day' else 'chunks'}; data drift at "
            f"{settings.drift_share_threshold:.2f}"
        )

    result = DriftResult(
        interval=str(interval),
        day=interval.start.date().isoformat(),
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
    )
    log.info(
        "drift %s: %d/%d columns drifted (%.2f), prediction drift %s",
        interval,
        len(drifted),
        len(column_scores),
        share,
        result.prediction_drift_score,
    )
    return DriftMeasurement(result, snapshot)


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    interval: Interval,
    settings: Settings,
    *,
    labels: pd.DataFrame | None = None,
    performance: Mapping[str, Any] | None = None,
    report_dir: str | Path | None = None,
    champion_version: str | None = None,
) -> DriftResult:
    """:func:`measure_drift`, then :func:`~driftline.monitoring.drift_report.write_drift_report`.

    Args:
        reference, current, interval, settings, labels, performance, champion_version:
            As for :func:`measure_drift`.
        report_dir: Root of the reports; ``{lake}/monitoring/reports`` when None. The
            interval's ``dt=YYYY-MM-DD`` folder is overwritten on a rerun.

    Returns:
        The result, with the paths of ``drift_report.html`` (not written for an interval
        with insufficient data) and ``drift.json``.
    """
    measurement = measure_drift(
        reference,
        current,
        interval,
        settings,
        labels=labels,
        performance=performance,
        champion_version=champion_version,
    )
    folder = report_folder(settings, interval.start.date(), report_dir)
    return write_drift_report(measurement, folder)
