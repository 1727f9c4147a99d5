"""Chargebacks (fraud labels): reported for most fraud, 1..``max_label_delay_days``
days after the transaction."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, timedelta

import numpy as np
import pyarrow as pa

from driftline.core import schemas
from driftline.simulator.columns import timestamps, transaction_ids
from driftline.simulator.config import SimulatorConfig
from driftline.simulator.days import check_day, day_rows, day_seeds
from driftline.simulator.rows import LEGIT
from driftline.simulator.units import DAY_US, EPOCH, FloatArray, IntArray, day_start_us

_REPORT_PROBABILITY = 0.9
_DELAY_DECAY = 0.7


@dataclass(frozen=True)
class _Chargebacks:
    """Chargebacks of one transaction day (positions index that day's sorted rows)."""

    position: IntArray
    user_id: IntArray
    merchant_id: IntArray
    transaction_ts: IntArray
    report_day: IntArray
    label_ts: IntArray


def _delay_cdf(max_delay: int) -> FloatArray:
    """CDF of the report delay 1..``max_delay`` days (geometric-like, skewed short)."""
    weights = _DELAY_DECAY ** np.arange(max_delay, dtype=np.float64)
    cdf: FloatArray = np.cumsum(weights) / weights.sum()
    return cdf


@functools.lru_cache(maxsize=64)
def _chargebacks(config: SimulatorConfig, day: date) -> _Chargebacks:
    """Which fraud of ``day`` is reported, on which day (ordinal) and when."""
    rows = day_rows(config, day)
    position = np.flatnonzero(rows.fraud != LEGIT).astype(np.int64)
    rng = np.random.default_rng(day_seeds(config, day)[2])
    n = len(position)
    reported = rng.random(n) < _REPORT_PROBABILITY
    cdf = _delay_cdf(config.max_label_delay_days)
    delay = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1) + 1
    moment = rng.integers(0, DAY_US, n)
    keep = position[reported]
    report_day = day.toordinal() + delay[reported].astype(np.int64)
    label_ts = (report_day - EPOCH.toordinal()) * DAY_US + moment[reported]
    return _Chargebacks(
        position=keep,
        user_id=rows.user[keep] + 1,
        merchant_id=rows.merchant[keep] + 1,
        transaction_ts=rows.ts[keep] + day_start_us(day),
        report_day=report_day,
        label_ts=label_ts,
    )


def _labels_of(config: SimulatorConfig, tx_day: date, report_day: date) -> pa.Table:
    """Chargebacks of ``tx_day``'s transactions reported on ``report_day``."""
    cb = _chargebacks(config, tx_day)
    keep = cb.report_day == report_day.toordinal()
    columns = [
        transaction_ids(tx_day, cb.position[keep]),
        pa.array(cb.user_id[keep], type=pa.int64()),
        pa.array(cb.merchant_id[keep], type=pa.int64()),
        timestamps(cb.transaction_ts[keep]),
        timestamps(cb.label_ts[keep]),
        pa.array(np.ones(int(keep.sum()), dtype=np.int64), type=pa.int64()),
    ]
    return pa.Table.from_arrays(columns, schema=schemas.LABELS)


def simulate_labels(config: SimulatorConfig, report_day: date) -> pa.Table:
    """Chargebacks reported on ``report_day`` (``label_ts`` within that day).

    Regenerates the transaction days ``[report_day - max_label_delay_days,
    report_day]`` (never before ``config.anchor``) and keeps the chargebacks whose
    report falls on ``report_day``.

    Returns:
        A table matching :data:`schemas.LABELS`, sorted by ``label_ts`` then
        ``transaction_id``.
    """
    check_day(config, report_day)
    first = max(config.anchor, report_day - timedelta(days=config.max_label_delay_days))
    days = (first + timedelta(days=i) for i in range((report_day - first).days + 1))
    table = pa.concat_tables([_labels_of(config, d, report_day) for d in days])
    return table.sort_by([("label_ts", "ascending"), ("transaction_id", "ascending")])
