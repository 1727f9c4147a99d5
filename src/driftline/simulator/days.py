"""All transactions of one day: legit plus fraud, from seeds of ``(seed, day)`` only,
so any day can be regenerated alone and equals the same day generated in a range.
"""

from __future__ import annotations

import functools
from datetime import date

import numpy as np

from driftline.simulator.config import SimulatorConfig
from driftline.simulator.legit import legit_transactions
from driftline.simulator.patterns import fraud_transactions
from driftline.simulator.population import population_of
from driftline.simulator.rows import Rows
from driftline.simulator.units import DAY_US, IntArray

#: Volume factor per weekday (Monday first); mean 1.
_WEEKDAY_FACTOR = (0.95, 0.97, 1.0, 1.02, 1.12, 1.1, 0.84)


def _unique_per_user(user: IntArray, ts: IntArray) -> IntArray:
    """Nudge times by microseconds so no user has two equal times; stay inside the day.

    Within each user (times sorted), a forward pass enforces ``t[i] >= t[i-1] + 1`` and a
    backward pass ``t[i] <= t[i+1] - 1`` capped at the day's last microsecond.
    """
    n = len(ts)
    if n == 0:
        return ts.copy()
    order = np.lexsort((ts, user))
    u, t = user[order], ts[order]
    idx = np.arange(n, dtype=np.int64)
    big = DAY_US + 4 * n + 16
    base = u * big
    forward = np.maximum.accumulate(t - idx + base) - base + idx
    last = np.flatnonzero(np.r_[u[1:] != u[:-1], True])
    group_last = np.repeat(last, np.diff(np.r_[-1, last]))
    capped = np.minimum(forward - idx, DAY_US - 1 - group_last) + base
    backward = np.minimum.accumulate(capped[::-1])[::-1] - base + idx
    out = np.empty_like(ts)
    out[order] = backward
    return out


def day_seeds(config: SimulatorConfig, day: date) -> list[np.random.SeedSequence]:
    """Independent streams (legit, fraud, labels) of ``day``, all from ``[seed, day]``."""
    root = np.random.SeedSequence([config.seed, day.toordinal()])
    return root.spawn(3)


def _day_volume(config: SimulatorConfig, day: date) -> int:
    """Number of transactions on ``day`` (weekday seasonality around ``rows_per_day``)."""
    return max(1, round(config.rows_per_day * _WEEKDAY_FACTOR[day.weekday()]))


def check_day(config: SimulatorConfig, day: date) -> None:
    """Reject days before the simulation's anchor."""
    if day < config.anchor:
        raise ValueError(f"day {day} precedes the simulation anchor {config.anchor}")


@functools.lru_cache(maxsize=2)
def day_rows(config: SimulatorConfig, day: date) -> Rows:
    """All transactions of ``day``, sorted by (ts, user), ``ts`` unique per user."""
    check_day(config, day)
    pop = population_of(config)
    legit_seed, fraud_seed, _ = day_seeds(config, day)
    total = _day_volume(config, day)
    budget = total * config.fraud_rate
    legit = legit_transactions(
        pop,
        np.random.default_rng(legit_seed),
        max(0, total - round(budget)),
        config.drift_intensity("covariate_shift", day),
    )
    fraud = fraud_transactions(config, pop, np.random.default_rng(fraud_seed), day, budget)
    rows = Rows.concat([legit, fraud])
    ts = _unique_per_user(rows.user, rows.ts)
    order = np.lexsort((np.arange(len(ts)), rows.user, ts))
    rows = rows.take(order)
    rows.ts[:] = ts[order]
    rows.amount[:] = np.round(rows.amount, 2)
    for name in Rows.__dataclass_fields__:
        getattr(rows, name).setflags(write=False)
    return rows
