"""Evidence for decisions: PR-AUC with bootstrap intervals (one definition each).

With a few dozen labelled frauds a PR-AUC moves by several hundredths from one sample of
days to the next, so no decision rests on a point estimate alone. The intervals here are
percentile intervals of a *stratified* bootstrap: each resample keeps the number of
frauds and of legitimate rows (the quantity that limits the evidence), drawn from a
generator with a fixed seed, so the same data always gives the same interval.

* :func:`average_precision` -- PR-AUC as scikit-learn's ``average_precision_score``
  defines it (step-wise, no interpolation), vectorised over resamples;
* :func:`pr_auc_interval` -- PR-AUC of one sample and its interval;
* :func:`difference_interval` -- PR-AUC of sample ``a`` minus that of an independent
  sample ``b`` (served days against the reference days);
* :func:`paired_difference_interval` -- PR-AUC of two scorings of the *same* rows
  (candidate against champion), the rows resampled together.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: Seed of every bootstrap (the same data always gives the same interval).
BOOTSTRAP_SEED = 0
#: Resamples scored per block (bounds the memory of the weight matrix).
_BLOCK = 64

FloatArray = np.ndarray


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its bootstrap interval.

    Attributes:
        value: The estimate on the data as observed (None when it cannot be computed).
        low: Lower end of the interval (None without one).
        high: Upper end of the interval.
        confidence: Two-sided level of the interval (each side holds ``(1 - c) / 2``).
        positives: Labelled frauds the estimate rests on (the smaller side for a
            difference).
    """

    value: float | None
    low: float | None
    high: float | None
    confidence: float
    positives: int

    @property
    def below_zero(self) -> bool:
        """The whole interval lies below zero (significantly negative)."""
        return self.high is not None and self.high < 0.0

    @property
    def above_zero(self) -> bool:
        """The whole interval lies above zero (significantly positive)."""
        return self.low is not None and self.low > 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


class _Sorted:
    """Labels in descending score order and the last index of each distinct score."""

    def __init__(self, labels: np.ndarray, scores: np.ndarray) -> None:
        order = np.argsort(-scores, kind="mergesort")
        ordered = scores[order]
        self.order = order
        self.labels = labels[order].astype(np.float64)
        self.ends = np.r_[np.flatnonzero(np.diff(ordered) != 0), ordered.size - 1]


def _weighted_ap(data: _Sorted, weights: np.ndarray) -> FloatArray:
    """Average precision per row of ``weights`` (resample counts, in sorted order)."""
    tp = np.cumsum(weights * data.labels, axis=1)[:, data.ends]
    seen = np.cumsum(weights, axis=1)[:, data.ends]
    positives = tp[:, -1]
    gained = np.diff(tp, axis=1, prepend=0.0)
    precision = np.divide(tp, seen, out=np.zeros_like(tp), where=seen > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap: FloatArray = (gained * precision).sum(axis=1) / positives
    return ap


def _check(labels: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels, dtype=np.int64)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("labels and scores must be 1-d arrays of the same length")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite")
    return y, s


def average_precision(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """PR-AUC (average precision) of ``scores`` against binary ``labels``.

    Equal to ``sklearn.metrics.average_precision_score``; None without a positive.
    """
    y, s = _check(labels, scores)
    if not y.any():
        return None
    data = _Sorted(y, s)
    return float(_weighted_ap(data, np.ones((1, y.size)))[0])


def _stratified_weights(y: np.ndarray, rng: np.random.Generator, samples: int) -> np.ndarray:
    """Resample counts per row (``samples`` x n), positives and negatives kept apart."""
    weights = np.zeros((samples, y.size))
    for cls in (0, 1):
        rows = np.flatnonzero(y == cls)
        if rows.size:
            weights[:, rows] = rng.multinomial(
                rows.size, np.full(rows.size, 1 / rows.size), samples
            )
    return weights


def _resampled_ap(
    y: np.ndarray, scorings: list[np.ndarray], rng: np.random.Generator, samples: int
) -> list[FloatArray]:
    """Average precision of each scoring of the same rows under the same resamples."""
    sorted_ = [_Sorted(y, s) for s in scorings]
    out: list[list[FloatArray]] = [[] for _ in scorings]
    for start in range(0, samples, _BLOCK):
        weights = _stratified_weights(y, rng, min(_BLOCK, samples - start))
        for index, data in enumerate(sorted_):
            out[index].append(_weighted_ap(data, weights[:, data.order]))
    return [np.concatenate(parts) for parts in out]


def _interval(values: FloatArray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


def _rng(seed: int | None) -> np.random.Generator:
    return np.random.default_rng(BOOTSTRAP_SEED if seed is None else seed)


def pr_auc_interval(
    labels: np.ndarray,
    scores: np.ndarray,
    *,
    samples: int,
    confidence: float,
    seed: int | None = None,
) -> Estimate:
    """PR-AUC of one sample and its stratified-bootstrap interval."""
    y, s = _check(labels, scores)
    positives = int(y.sum())
    value = average_precision(y, s)
    if value is None or positives == y.size:
        return Estimate(value, None, None, confidence, positives)
    (resampled,) = _resampled_ap(y, [s], _rng(seed), samples)
    return Estimate(value, *_interval(resampled, confidence), confidence, positives)


def difference_interval(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    *,
    samples: int,
    confidence: float,
    seed: int | None = None,
) -> Estimate:
    """PR-AUC of sample ``a`` minus that of the independent sample ``b``.

    Each side is ``(labels, scores)``; each is resampled on its own (stratified). The
    interval is None when either side lacks a class.
    """
    ya, sa = _check(*a)
    yb, sb = _check(*b)
    positives = int(min(ya.sum(), yb.sum()))
    first, second = average_precision(ya, sa), average_precision(yb, sb)
    if first is None or second is None or ya.all() or yb.all():
        return Estimate(None, None, None, confidence, positives)
    rng = _rng(seed)
    (left,) = _resampled_ap(ya, [sa], rng, samples)
    (right,) = _resampled_ap(yb, [sb], rng, samples)
    return Estimate(first - second, *_interval(left - right, confidence), confidence, positives)


def paired_difference_interval(
    labels: np.ndarray,
    scores_a: np.ndarray,
    scores_b: np.ndarray,
    *,
    samples: int,
    confidence: float,
    seed: int | None = None,
) -> Estimate:
    """PR-AUC of scoring ``a`` minus scoring ``b`` of the same rows (paired bootstrap)."""
    y, sa = _check(labels, scores_a)
    _, sb = _check(labels, scores_b)
    positives = int(y.sum())
    first, second = average_precision(y, sa), average_precision(y, sb)
    if first is None or second is None or positives == y.size:
        return Estimate(None, None, None, confidence, positives)
    left, right = _resampled_ap(y, [sa, sb], _rng(seed), samples)
    return Estimate(first - second, *_interval(left - right, confidence), confidence, positives)
