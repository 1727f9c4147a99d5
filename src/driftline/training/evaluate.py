"""Offline evaluation of a fraud scorer: metrics, latency, curves and behavioural checks.

Everything here works on plain arrays, DataFrames and a ``predict`` callable
(``frame -> fraud probability per row``), so the same checks run on a freshly trained
:class:`~driftline.training.trainer.TrainedModel`, a model loaded from the registry or a
toy function in a test.

* :func:`score_metrics` -- ranking and calibration metrics on labelled scores. The
  primary metric is ``pr_auc`` (average precision): fraud is rare, so the area under the
  precision-recall curve moves where ROC AUC barely does.
* :func:`batch_latency` -- p50/p99 milliseconds per batch and rows per second.
* :func:`evaluate_model` -- both of the above for a model on a holdout frame.
* :func:`write_curves` -- PR and calibration plots (PNG) and their data (CSV, for
  ``dvc plots``).
* :func:`risky_examples` and :func:`behavioural_checks` -- a fixed set of risky rows, and
  directional (a larger amount must not lower the score) and invariance (same row, same
  score, whatever the batch) tests on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import (
    average_precision_score,
    brier_score_loss,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from driftline.core.columns import LABEL

log = logging.getLogger(__name__)

#: A scoring function: model frame in, one fraud probability per row out.
Predict = Callable[[pd.DataFrame], np.ndarray]

#: Most points written to ``pr_curve.csv`` (``dvc plots`` renders every row).
MAX_CURVE_POINTS = 500
#: Equal-width probability bins of the calibration curve.
CALIBRATION_BINS = 10
#: Rows scored one at a time in the single-row invariance check.
SINGLE_ROW_CHECKS = 32
#: ``user_amount_to_mean_7d`` at or above this marks an unusually large amount.
LARGE_AMOUNT_RATIO = 3.0
#: Calls made before timing starts (lazy initialisation, allocator and cache warm-up).
WARMUP_CALLS = 3


class Scorer(Protocol):
    """Anything with ``predict_proba(frame) -> probabilities`` (e.g. ``TrainedModel``)."""

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Return the fraud probability of every row of ``frame``."""
        ...


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def _as_arrays(
    y_true: npt.ArrayLike, scores: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """Validate labels and scores and return them as flat numpy arrays."""
    y = np.asarray(y_true).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} labels but {s.size} scores")
    if y.size == 0:
        raise ValueError("no rows to evaluate")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    if np.unique(y).size < 2:
        raise ValueError(
            f"all {y.size} labels are {int(y[0])}: PR-AUC and ROC AUC need both classes"
        )
    return y.astype(np.int64), s


def recall_at_fpr(y_true: npt.ArrayLike, scores: npt.ArrayLike, max_fpr: float = 0.01) -> float:
    """Best recall (true-positive rate) of any threshold whose false-positive rate <= max_fpr.

    Args:
        y_true: 0/1 labels (both classes present).
        scores: Scores, higher meaning more likely fraud.
        max_fpr: Largest acceptable share of legitimate transactions flagged.

    Returns:
        The recall, 0.0 when no threshold other than "flag nothing" stays within budget.
    """
    if not 0.0 <= max_fpr <= 1.0:
        raise ValueError(f"max_fpr must be in [0, 1], got {max_fpr}")
    y, s = _as_arrays(y_true, scores)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return float(tpr[fpr <= max_fpr].max())


def score_metrics(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, *, max_fpr: float = 0.01
) -> dict[str, float]:
    """Ranking and calibration metrics of fraud probabilities against labels.

    Args:
        y_true: 0/1 labels; both classes must be present.
        scores: Fraud probabilities in [0, 1] (the Brier score needs probabilities).
        max_fpr: False-positive budget of ``recall_at_fpr``.

    Returns:
        ``pr_auc`` (average precision, the primary metric), ``roc_auc``,
        ``recall_at_fpr`` (best recall with FPR <= ``max_fpr``), ``max_fpr`` (the budget
        used, so the key name stays the same whatever the budget), ``brier``, ``rows``,
        ``positives`` and ``base_rate`` (positives / rows, the PR-AUC of a random scorer).

    Raises:
        ValueError: On a single class, mismatched lengths, non-0/1 labels or NaN scores.
    """
    y, s = _as_arrays(y_true, scores)
    positives = int(y.sum())
    return {
        "pr_auc": float(average_precision_score(y, s)),
        "roc_auc": float(roc_auc_score(y, s)),
        "recall_at_fpr": recall_at_fpr(y, s, max_fpr),
        "max_fpr": float(max_fpr),
        "brier": float(brier_score_loss(y, s)),
        "rows": float(y.size),
        "positives": float(positives),
        "base_rate": positives / y.size,
    }


# --------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------


def _batches(frame: pd.DataFrame, batch_size: int) -> list[pd.DataFrame]:
    """Consecutive full batches of ``frame`` (the whole frame when it is smaller)."""
    if len(frame) <= batch_size:
        return [frame]
    starts = range(0, len(frame) - batch_size + 1, batch_size)
    return [frame.iloc[start : start + batch_size] for start in starts]


def batch_latency(
    predict: Predict, frame: pd.DataFrame, *, batch_size: int = 256, repeats: int = 20
) -> dict[str, float]:
    """Time ``predict`` on batches of ``frame`` after a short warm-up.

    The timed calls cycle through consecutive full batches of ``frame`` (so caches do not
    see the same rows every time); when ``frame`` is smaller than ``batch_size`` every
    call scores the whole frame.

    Args:
        predict: The scoring function.
        frame: Rows to score (model-frame columns).
        batch_size: Rows per call.
        repeats: Timed calls.

    Returns:
        ``latency_p50_ms``, ``latency_p99_ms`` and ``latency_mean_ms`` per batch,
        ``throughput_rows_per_s`` (batch rows / mean seconds) and ``latency_batch_rows``.
    """
    if batch_size < 1 or repeats < 1:
        raise ValueError("batch_size and repeats must be positive")
    if frame.empty:
        raise ValueError("cannot time an empty frame")
    batches = _batches(frame, batch_size)
    for i in range(WARMUP_CALLS):
        predict(batches[i % len(batches)])
    seconds = np.empty(repeats)
    for i in range(repeats):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        predict(batch)
        seconds[i] = time.perf_counter() - start
    rows = len(batches[0])
    mean = float(seconds.mean())
    return {
        "latency_p50_ms": float(np.percentile(seconds, 50) * 1000),
        "latency_p99_ms": float(np.percentile(seconds, 99) * 1000),
        "latency_mean_ms": mean * 1000,
        "throughput_rows_per_s": rows / mean if mean > 0 else float("inf"),
        "latency_batch_rows": float(rows),
    }


def evaluate_predict(
    predict: Predict, holdout: pd.DataFrame, *, max_fpr: float = 0.01
) -> tuple[dict[str, float], np.ndarray]:
    """Score ``holdout`` once; return :func:`score_metrics` + :func:`batch_latency` and the scores.

    Args:
        predict: Scores a model frame (a model's ``predict_proba``, a pyfunc wrapper).
        holdout: Labelled model frame (must hold the ``label`` column and both classes).
        max_fpr: False-positive budget of ``recall_at_fpr``.
    """
    scores = predict(holdout)
    metrics = score_metrics(holdout[LABEL].to_numpy(), scores, max_fpr=max_fpr)
    metrics.update(batch_latency(predict, holdout))
    log.info(
        "holdout: pr_auc=%.4f roc_auc=%.4f recall@fpr%.3g=%.4f p99=%.2fms over %d rows",
        metrics["pr_auc"],
        metrics["roc_auc"],
        max_fpr,
        metrics["recall_at_fpr"],
        metrics["latency_p99_ms"],
        len(holdout),
    )
    return metrics, scores


def evaluate_model(
    model: Scorer, holdout: pd.DataFrame, *, max_fpr: float = 0.01
) -> dict[str, float]:
    """:func:`evaluate_predict` for anything with ``predict_proba`` (a ``TrainedModel``)."""
    return evaluate_predict(model.predict_proba, holdout, max_fpr=max_fpr)[0]


# --------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------


def pr_curve_frame(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, *, max_points: int = MAX_CURVE_POINTS
) -> pd.DataFrame:
    """Precision-recall curve as columns ``precision, recall, threshold``.

    One row per distinct threshold (ascending; the curve's "flag nothing" end point has no
    threshold and is left out), evenly subsampled to at most ``max_points`` rows with both
    ends kept.
    """
    y, s = _as_arrays(y_true, scores)
    precision, recall, thresholds = precision_recall_curve(y, s)
    curve = pd.DataFrame(
        {"precision": precision[:-1], "recall": recall[:-1], "threshold": thresholds}
    )
    if len(curve) > max_points:
        keep = np.unique(np.linspace(0, len(curve) - 1, max_points).round().astype(int))
        curve = curve.iloc[keep].reset_index(drop=True)
    return curve


def calibration_frame(
    y_true: npt.ArrayLike, scores: npt.ArrayLike, *, bins: int = CALIBRATION_BINS
) -> pd.DataFrame:
    """Reliability table over equal-width probability bins (empty bins left out).

    Columns: ``bin_lower``, ``bin_upper``, ``mean_predicted``, ``fraction_positive``,
    ``count``.
    """
    y, s = _as_arrays(y_true, scores)
    edges = np.linspace(0.0, 1.0, bins + 1)
    index = np.clip(np.digitize(s, edges[1:-1], right=False), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            rows.append(
                {
                    "bin_lower": edges[b],
                    "bin_upper": edges[b + 1],
                    "mean_predicted": float(s[mask].mean()),
                    "fraction_positive": float(y[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return pd.DataFrame(rows)


def _save_plot(
    path: Path,
    title: str,
    xlabel: str,
    ylabel: str,
    series: Sequence[tuple[Sequence[float], Sequence[float], str, str]],
) -> None:
    """Draw line ``series`` (x, y, label, style) on one axis and write a PNG.

    Uses matplotlib's object API with the Agg canvas, so no global backend is switched
    and no display is needed.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5, 4), dpi=100)
    FigureCanvasAgg(figure)
    axis = figure.add_subplot()
    for x, y, label, style in series:
        axis.plot(x, y, style, label=label)
    axis.set(title=title, xlabel=xlabel, ylabel=ylabel, xlim=(0, 1), ylim=(0, 1.02))
    axis.grid(alpha=0.3)
    axis.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path)


def write_curves(y_true: npt.ArrayLike, scores: npt.ArrayLike, out_dir: Path) -> dict[str, Path]:
    """Write the PR and calibration curves as PNG plots and CSV data under ``out_dir``.

    Files: ``pr_curve.png``, ``pr_curve.csv`` (precision, recall, threshold; at most
    :data:`MAX_CURVE_POINTS` rows), ``calibration.png`` and ``calibration.csv`` (see
    :func:`calibration_frame`). The CSVs are what ``dvc plots`` reads.

    Returns:
        The written paths by name: ``pr_curve_png``, ``pr_curve_csv``,
        ``calibration_png``, ``calibration_csv``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    y, s = _as_arrays(y_true, scores)
    pr = pr_curve_frame(y, s)
    calibration = calibration_frame(y, s)
    paths = {
        "pr_curve_png": out_dir / "pr_curve.png",
        "pr_curve_csv": out_dir / "pr_curve.csv",
        "calibration_png": out_dir / "calibration.png",
        "calibration_csv": out_dir / "calibration.csv",
    }
    pr.to_csv(paths["pr_curve_csv"], index=False)
    calibration.to_csv(paths["calibration_csv"], index=False)
    base_rate = float(y.mean())
    _save_plot(
        paths["pr_curve_png"],
        f"Precision-recall (AP = {average_precision_score(y, s):.3f})",
        "recall",
        "precision",
        [
            (pr["recall"].tolist(), pr["precision"].tolist(), "model", "-"),
            ([0.0, 1.0], [base_rate, base_rate], f"base rate {base_rate:.3f}", "--"),
        ],
    )
    _save_plot(
        paths["calibration_png"],
        "Calibration",
        "mean predicted probability",
        "observed fraud rate",
        [
            (
                calibration["mean_predicted"].tolist(),
                calibration["fraction_positive"].tolist(),
                "model",
                "o-",
            ),
            ([0.0, 1.0], [0.0, 1.0], "perfect", "--"),
        ],
    )
    return paths


# --------------------------------------------------------------------------------------
# Behavioural checks
# --------------------------------------------------------------------------------------


def _flag(frame: pd.DataFrame, column: str, threshold: float) -> pd.Series:
    """``frame[column] >= threshold``; False where the column or the value is missing."""
    if column not in frame:
        return pd.Series(False, index=frame.index)
    return pd.to_numeric(frame[column], errors="coerce").ge(threshold).fillna(False)


def risky_examples(frame: pd.DataFrame, n: int = 200) -> pd.DataFrame:
    """Pick a deterministic set of up to ``n`` risky rows for behavioural checks.

    A row is risky when at least one signal holds (a missing column or value counts as
    "no"):

    * it is labelled fraud (``label == 1``);
    * ``user_new_device >= 1`` (first use of this device by the user in 7 days);
    * ``user_distinct_countries_24h >= 2`` (the card was used in another country today);
    * ``user_amount_to_mean_7d >= 3`` (amount at least 3x the user's 7-day mean).

    Rows are ordered by the number of signals (most first), then by ``transaction_id``
    (when present) and then by their position in ``frame``; the first ``n`` are kept, so
    the same frame always yields the same rows in the same order. Fewer than ``n`` rows
    come back when fewer are risky.

    Returns:
        The chosen rows, all columns, with a fresh 0..k-1 index.
    """
    if n < 1:
        raise ValueError("n must be positive")
    signals = (
        _flag(frame, LABEL, 1).astype(int)
        + _flag(frame, "user_new_device", 1).astype(int)
        + _flag(frame, "user_distinct_countries_24h", 2).astype(int)
        + _flag(frame, "user_amount_to_mean_7d", LARGE_AMOUNT_RATIO).astype(int)
    )
    order = pd.DataFrame(
        {
            "signals": -signals.to_numpy(),
            "tiebreak": frame["transaction_id"].astype(str).to_numpy()
            if "transaction_id" in frame
            else np.zeros(len(frame), dtype=int),
            "position": np.arange(len(frame)),
        }
    )
    order = order[order["signals"] < 0].sort_values(
        ["signals", "tiebreak", "position"], kind="mergesort"
    )
    chosen = order["position"].to_numpy()[:n]
    return frame.iloc[chosen].reset_index(drop=True)


def _scores(predict: Predict, frame: pd.DataFrame) -> npt.NDArray[np.float64]:
    """Call ``predict`` and check that it returned one finite score per row."""
    scores = np.asarray(predict(frame), dtype=np.float64).ravel()
    if scores.shape != (len(frame),):
        raise ValueError(f"predict returned {scores.size} scores for {len(frame)} rows")
    return scores


def _invariance(
    predict: Predict, examples: pd.DataFrame, base: npt.NDArray[np.float64]
) -> dict[str, float]:
    """Largest score differences: scored again, scored alone, scored in shuffled order."""
    again = _scores(predict, examples)
    single = min(len(examples), SINGLE_ROW_CHECKS)
    alone = np.array([_scores(predict, examples.iloc[[i]])[0] for i in range(single)])
    # A fixed permutation keeps the check reproducible.
    perm = np.random.default_rng(0).permutation(len(examples))
    shuffled = _scores(predict, examples.iloc[perm].reset_index(drop=True))
    return {
        "invariance_repeat_diff": float(np.abs(again - base).max()),
        "invariance_single_row_diff": float(np.abs(alone - base[:single]).max()),
        "invariance_shuffle_diff": float(np.abs(shuffled - base[perm]).max()),
    }


def behavioural_checks(
    predict: Predict,
    examples: pd.DataFrame,
    *,
    factors: Sequence[float] = (1.5, 3.0),
    tol: float = 1e-6,
    invariance_tol: float = 1e-5,
    max_violation_rate: float = 0.0,
) -> dict[str, float | int | bool]:
    """Directional and invariance tests of ``predict`` on a fixed set of rows.

    Directional: every row is scored with ``amount`` multiplied by each factor and every
    other column unchanged (derived features such as ``user_amount_to_mean_7d`` are left
    as they are on purpose, so the test isolates the request amount). A row violates the
    expectation when any factor *lowers* its score by more than ``tol``.

    Invariance: a row's score must not depend on when or with whom it is scored --
    the rows are scored a second time, the first :data:`SINGLE_ROW_CHECKS` one at a time,
    and all of them in a fixed shuffled order.

    Args:
        predict: The scoring function.
        examples: Rows to test (e.g. :func:`risky_examples`); needs an ``amount`` column.
        factors: Amount multipliers, each above 1.
        tol: Score drops up to this are noise in the directional check.
        invariance_tol: Largest score difference the invariance check accepts. Float32
            matrix products round differently for different batch shapes (a trained
            net here shows up to ~3e-7 between a row scored alone and in a batch), so
            this is looser than ``tol``.
        max_violation_rate: Largest directional violation rate that still passes.

    Returns:
        ``rows``, ``directional_amount_violations`` (rows violating for any factor),
        ``directional_amount_rate`` (that / rows), ``directional_amount_violations_x<f>``
        per factor, ``directional_amount_max_drop``, ``invariance_max_diff`` and its parts
        (``invariance_repeat_diff``, ``invariance_single_row_diff``,
        ``invariance_shuffle_diff``), and ``passed`` (violation rate within
        ``max_violation_rate`` and ``invariance_max_diff <= invariance_tol``).
    """
    if examples.empty:
        raise ValueError("no examples to check")
    if any(f <= 1 for f in factors):
        raise ValueError("amount factors must be above 1")
    base = _scores(predict, examples)
    violating = np.zeros(len(examples), dtype=bool)
    report: dict[str, float | int | bool] = {"rows": len(examples)}
    max_drop = 0.0
    for factor in factors:
        scaled = examples.copy()
        scaled["amount"] = scaled["amount"] * factor
        drop = base - _scores(predict, scaled)
        bad = drop > tol
        report[f"directional_amount_violations_x{factor:g}"] = int(bad.sum())
        violating |= bad
        max_drop = max(max_drop, float(drop.max()))
    invariance = _invariance(predict, examples, base)
    violations = int(violating.sum())
    rate = violations / len(examples)
    report.update(
        {
            "directional_amount_violations": violations,
            "directional_amount_rate": rate,
            "directional_amount_max_drop": max_drop,
            "invariance_max_diff": max(invariance.values()),
            **invariance,
        }
    )
    invariant = report["invariance_max_diff"] <= invariance_tol
    report["passed"] = bool(rate <= max_violation_rate and invariant)
    if not report["passed"]:
        log.warning("behavioural checks failed: %s", report)
    return report
