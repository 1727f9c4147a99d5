"""Legit spending: per-user habits (favourite merchants, home country, known devices,
lognormal amounts around a typical spend), optionally under the ``covariate_shift``
drift at an intensity (0: none, 1: the full shift)."""

from __future__ import annotations

import numpy as np

from driftline.core import schemas
from driftline.simulator.population import (
    N_FAVOURITES,
    Population,
    sample_cards,
    sample_users,
)
from driftline.simulator.rows import LEGIT, Rows, sample_times
from driftline.simulator.units import FloatArray, IntArray

#: Effects of the covariate shift at intensity 1 (each scales linearly with the intensity).
_SHIFT_AMOUNT = 0.3
_SHIFT_ONLINE = 0.25
_SHIFT_MOVED = 0.15
#: Log of the amount multiplier per category (relative to the user's typical spend).
_CATEGORY_LOG_AMOUNT = np.log(np.array([1.0, 0.8, 1.3, 4.0, 3.0, 1.6, 0.3, 0.4, 0.6, 1.8]))
_FAVOURITE_CDF = np.cumsum([0.3, 0.22, 0.17, 0.13, 0.1, 0.08])
_SHARE_FAVOURITE = 0.78
_SHARE_TRAVEL = 0.03
_SHARE_ONLINE_OTHER = 0.45
_SHARE_SECONDARY_DEVICE = 0.07


def _legit_amounts(
    pop: Population, rng: np.random.Generator, users: IntArray, merchants: IntArray
) -> FloatArray:
    """Amounts around each user's typical spend, scaled by merchant category."""
    log_amount = (
        pop.user_mu[users]
        + _CATEGORY_LOG_AMOUNT[pop.merchant_category[merchants]]
        + pop.user_sigma[users] * rng.standard_normal(len(users))
    )
    amounts: FloatArray = np.maximum(np.exp(log_amount), 0.5)
    return amounts


def _legit_merchants(
    pop: Population, rng: np.random.Generator, users: IntArray, shift: float
) -> IntArray:
    """Mostly favourite merchants; otherwise local shops, online shops or travel."""
    n = len(users)
    slot = np.searchsorted(_FAVOURITE_CDF, rng.random(n) * _FAVOURITE_CDF[-1], side="right")
    merchants: IntArray = pop.favourites[users, np.minimum(slot, N_FAVOURITES - 1)]
    u = rng.random(n)
    other = u >= _SHARE_FAVOURITE
    travel = u >= 1.0 - _SHARE_TRAVEL
    online_share = min(_SHARE_ONLINE_OTHER + _SHIFT_ONLINE * shift, 1.0)
    to_online = other & ~travel & (rng.random(n) < online_share)
    local = other & ~travel & ~to_online
    merchants[to_online] = pop.online[rng.integers(0, len(pop.online), int(to_online.sum()))]
    merchants[local] = pop.pos_by_country.pick(rng, pop.user_country[users[local]])
    abroad = rng.integers(0, len(schemas.COUNTRIES), int(travel.sum()))
    merchants[travel] = pop.pos_by_country.pick(rng, abroad)
    if shift > 0.0 and len(pop.shift_targets):
        moved = rng.random(n) < min(_SHIFT_MOVED * shift, 1.0)
        merchants[moved] = pop.shift_targets[
            rng.integers(0, len(pop.shift_targets), int(moved.sum()))
        ]
    return merchants


def shift_inflation(shift: float) -> float:
    """Amount multiplier of the covariate shift at intensity ``shift`` (1.3 at 1)."""
    return 1.0 + _SHIFT_AMOUNT * shift


def legit_transactions(pop: Population, rng: np.random.Generator, n: int, shift: float) -> Rows:
    """``n`` legit transactions following the users' habits, under a covariate shift of
    intensity ``shift`` (0: none)."""
    users = sample_users(pop, rng, n)
    merchants = _legit_merchants(pop, rng, users, shift)
    amount = _legit_amounts(pop, rng, users, merchants) * shift_inflation(shift)
    secondary = rng.random(n) < _SHARE_SECONDARY_DEVICE
    return Rows(
        user=users,
        card=sample_cards(pop, rng, users),
        merchant=merchants,
        ts=sample_times(rng, n),
        amount=amount,
        new_device=np.zeros(n, dtype=bool),
        device=(users + 1) * 2 + secondary,
        fraud=np.full(n, LEGIT, dtype=np.int64),
    )
