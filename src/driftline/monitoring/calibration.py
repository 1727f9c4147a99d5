"""Data-drift thresholds calibrated on the reference's own no-drift variability.

A fixed threshold on a drift statistic (Evidently's default 0.1 for the normed
Wasserstein distance) says nothing about how much an input moves from one ordinary day
to the next: a merchant's 24-hour count varies more between two weekdays than a
currency mix does in a month. So each input gets the threshold its reference earns:

1. the reference (the newest labelled week of the champion's training data) is split
   into day-sized chunks -- its transaction days, when it records them
   (``event_timestamp``); otherwise :data:`RANDOM_CHUNKS` random chunks, which
   only measure sampling noise (noted);
2. the input's drift statistic is measured between each chunk and the rest of the
   reference -- the same statistic the served day is judged with (Evidently's normed
   Wasserstein distance for numeric inputs, Jensen-Shannon distance for categorical
   ones), by Evidently's own stat-test functions;
3. the threshold is the ``drift_threshold_quantile`` of those no-drift values, at least
   ``drift_threshold_min``.

The **baseline share** is what the share of drifted inputs is on a day without drift:
each chunk is judged against thresholds calibrated on the *other* chunks
(leave-one-out), and the mean and largest of those shares are reported next to the
served day's share.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from driftline.core.columns import CATEGORICAL
from driftline.core.settings import Settings

#: Evidently stat tests per kind of input (distances: drifted at or above a threshold).
NUMERIC_METHOD = "wasserstein"
CATEGORICAL_METHOD = "jensenshannon"
#: Reference columns that date a row (the first one present is used).
TIME_COLUMNS = ("event_timestamp", "ts")
#: Chunks drawn when the reference has no transaction times.
RANDOM_CHUNKS = 7
#: Fewest chunks a calibration needs.
MIN_CHUNKS = 3
_SEED = 0


@dataclass(frozen=True)
class Calibration:
    """Per-input thresholds and the no-drift baseline of one reference.

    Attributes:
        thresholds: Threshold per input (the drift statistic drifts at or above it).
        methods: Evidently stat test per input.
        chunks: Number of chunks compared.
        chunking: ``day`` (the reference's transaction days) or ``random``.
        baseline_share: Mean share of inputs at or above their threshold on a chunk,
            thresholds calibrated on the other chunks.
        baseline_share_max: The largest such share.
        statistics: Per input, the statistic of each chunk against the rest.
    """

    thresholds: dict[str, float]
    methods: dict[str, str]
    chunks: int
    chunking: str
    baseline_share: float
    baseline_share_max: float
    statistics: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """What a drift result records (the chunk statistics left out)."""
        out = asdict(self)
        out.pop("statistics")
        return out


def method_of(name: str) -> str:
    """The stat test judging input ``name``."""
    return CATEGORICAL_METHOD if name in CATEGORICAL else NUMERIC_METHOD


def statistic(name: str, reference: pd.Series, current: pd.Series) -> float | None:
    """The drift statistic of input ``name``, ``current`` against ``reference``.

    Evidently's own stat-test function, on the non-missing values (as Evidently drops
    them); None when either side has none.
    """
    from evidently.legacy.calculations.stattests import (
        jensenshannon_stat_test,
        wasserstein_stat_test,
    )
    from evidently.legacy.core import ColumnType

    ref, cur = reference.dropna(), current.dropna()
    if ref.empty or cur.empty:
        return None
    if name in CATEGORICAL:
        result = jensenshannon_stat_test(ref, cur, ColumnType.Categorical, 1.0)
    else:
        result = wasserstein_stat_test(ref, cur, ColumnType.Numerical, 1.0)
    return float(result.drift_score)


def chunk_labels(reference: pd.DataFrame, settings: Settings) -> tuple[np.ndarray, str]:
    """A chunk number per reference row, and how the chunks were made.

    Transaction days when the reference dates its rows (days with fewer than
    ``drift_min_rows`` rows are left out: -1), else random chunks.
    """
    for column in TIME_COLUMNS:
        if column in reference.columns and reference[column].notna().all():
            days = pd.to_datetime(reference[column], utc=True).dt.normalize()
            counts = days.value_counts()
            kept = counts[counts >= settings.drift_min_rows].index
            codes = np.full(len(reference), -1)
            for number, day in enumerate(sorted(kept)):
                codes[(days == day).to_numpy()] = number
            if len(kept) >= MIN_CHUNKS:
                return codes, "day"
    rng = np.random.default_rng(_SEED)
    return rng.permutation(np.arange(len(reference)) % RANDOM_CHUNKS), "random"


def _quantile(values: list[float], settings: Settings) -> float:
    if not values:
        return settings.drift_threshold_min
    return max(
        float(np.quantile(values, settings.drift_threshold_quantile)), settings.drift_threshold_min
    )


def calibrate(
    inputs: pd.DataFrame, chunks: np.ndarray, columns: list[str], chunking: str, settings: Settings
) -> Calibration | None:
    """Thresholds of ``columns`` from the chunks of the reference ``inputs``.

    Args:
        inputs: The reference's model inputs, normalised (float numerics, str categoricals).
        chunks: Chunk number per row (-1: in no chunk), see :func:`chunk_labels`.
        columns: The inputs to calibrate.
        chunking: How the chunks were made (recorded).
        settings: ``drift_threshold_quantile`` and ``drift_threshold_min``.

    Returns:
        The calibration, or None with fewer than :data:`MIN_CHUNKS` chunks.
    """
    numbers = sorted(int(n) for n in set(chunks.tolist()) if n >= 0)
    if len(numbers) < MIN_CHUNKS:
        return None
    stats: dict[str, list[float | None]] = {}
    for name in columns:
        column = inputs[name]
        stats[name] = [statistic(name, column[chunks != n], column[chunks == n]) for n in numbers]
    thresholds = {
        name: _quantile([v for v in values if v is not None], settings)
        for name, values in stats.items()
    }
    shares = []
    for index in range(len(numbers)):
        judged = over = 0
        for values in stats.values():
            own = values[index]
            if own is None:
                continue
            others = [v for i, v in enumerate(values) if i != index and v is not None]
            judged += 1
            over += own >= _quantile(others, settings)
        shares.append(over / judged if judged else 0.0)
    return Calibration(
        thresholds=thresholds,
        methods={name: method_of(name) for name in columns},
        chunks=len(numbers),
        chunking=chunking,
        baseline_share=float(np.mean(shares)),
        baseline_share_max=float(np.max(shares)),
        statistics={
            name: [float("nan") if v is None else v for v in values]
            for name, values in stats.items()
        },
    )
