"""Fraud patterns the model can learn.

* ``card_testing``: bursts of tiny online amounts on one card;
* ``account_takeover``: a new device, foreign merchants, large amounts;
* ``merchant_compromise``: a few merchants per week with a high fraud share;
* ``bust_out`` (only under the ``new_fraud_pattern`` drift): large amounts at home
  with the usual device, which evades the older signals.
"""

from __future__ import annotations

from datetime import date

import numpy as np

from driftline.simulator.config import SimulatorConfig
from driftline.simulator.legit import shift_inflation
from driftline.simulator.population import (
    POPULATION_STREAM,
    Population,
    sample_cards,
    sample_users,
)
from driftline.simulator.rows import (
    ACCOUNT_TAKEOVER,
    BUST_OUT,
    CARD_TESTING,
    MERCHANT_COMPROMISE,
    Rows,
    sample_times,
)
from driftline.simulator.units import DAY_US, MINUTE_US, SECOND_US, IntArray

#: Fraud budget split (share of fraud rows, mean rows per event).
_FRAUD_MIX = {CARD_TESTING: 0.3, ACCOUNT_TAKEOVER: 0.3, MERCHANT_COMPROMISE: 0.4}
#: Share of the fraud budget ``bust_out`` takes at intensity 1 (at most 0.9).
_BUST_OUT_SHARE = 0.3


def _bursts(
    rng: np.random.Generator, sizes: IntArray, gap_low: int, gap_high: int
) -> tuple[IntArray, IntArray]:
    """Event index and time of each row of bursts of ``sizes`` rows.

    Gaps between consecutive rows of one event are uniform in ``[gap_low, gap_high)``
    microseconds; each event starts uniformly in the day and ends before midnight.
    """
    event = np.repeat(np.arange(len(sizes), dtype=np.int64), sizes)
    if len(event) == 0:
        return event, np.zeros(0, dtype=np.int64)
    gaps = rng.integers(gap_low, gap_high, len(event))
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    gaps[first] = 0
    total = np.cumsum(gaps)
    offset = total - total[first][event]
    span = np.zeros(len(sizes), dtype=np.int64)
    np.maximum.at(span, event, offset)
    start = (rng.random(len(sizes)) * (DAY_US - 1 - span)).astype(np.int64)
    return event, start[event] + offset


def _new_devices(day: date, first: int, n: int) -> IntArray:
    """Numbers of ``n`` never-seen devices, unique per day (prefix ``x``)."""
    return day.toordinal() * 1_000_000 + first + np.arange(n, dtype=np.int64)


def _card_testing(pop: Population, rng: np.random.Generator, day: date, events: int) -> Rows:
    """Bursts of 5-20 tiny amounts within minutes on one card at online digital merchants."""
    sizes = rng.integers(5, 21, events).astype(np.int64)
    users = sample_users(pop, rng, events)
    cards = sample_cards(pop, rng, users)
    event, ts = _bursts(rng, sizes, 5 * SECOND_US, 90 * SECOND_US)
    pair = pop.card_testing[rng.integers(0, len(pop.card_testing), (events, 2))]
    merchants = pair[event, rng.integers(0, 2, len(event))]
    n = len(event)
    return Rows(
        user=users[event],
        card=cards[event],
        merchant=merchants,
        ts=ts,
        amount=rng.uniform(0.5, 4.99, n),
        new_device=np.ones(n, dtype=bool),
        device=_new_devices(day, 0, events)[event],
        fraud=np.full(n, CARD_TESTING, dtype=np.int64),
    )


def _foreign_merchants(pop: Population, rng: np.random.Generator, home: IntArray) -> IntArray:
    """Random merchants outside each row's ``home`` country (best effort)."""
    merchants = rng.integers(0, pop.n_merchants, len(home)).astype(np.int64)
    for _ in range(32):
        clash = pop.merchant_country[merchants] == home
        if not clash.any():
            break
        merchants[clash] = rng.integers(0, pop.n_merchants, int(clash.sum()))
    return merchants


def _account_takeover(
    pop: Population, rng: np.random.Generator, day: date, events: int, inflate: float
) -> Rows:
    """2-5 large amounts within an hour from a new device at foreign merchants."""
    sizes = rng.integers(2, 6, events).astype(np.int64)
    users = sample_users(pop, rng, events)
    cards = sample_cards(pop, rng, users)
    event, ts = _bursts(rng, sizes, MINUTE_US, 14 * MINUTE_US)
    n = len(event)
    row_users = users[event]
    amount = np.exp(pop.user_mu[row_users] + rng.normal(1.7, 0.35, n))
    return Rows(
        user=row_users,
        card=cards[event],
        merchant=_foreign_merchants(pop, rng, pop.user_country[row_users]),
        ts=ts,
        amount=np.maximum(amount, 150.0) * inflate,
        new_device=np.ones(n, dtype=bool),
        device=_new_devices(day, 500_000, events)[event],
        fraud=np.full(n, ACCOUNT_TAKEOVER, dtype=np.int64),
    )


def _compromised_merchants(config: SimulatorConfig, pop: Population, day: date) -> IntArray:
    """The merchants compromised during ``day``'s week (a new set every 7 days)."""
    period = (day - config.anchor).days // 7
    rng = np.random.default_rng(
        [config.seed, config.anchor.toordinal(), POPULATION_STREAM, period + (1 << 20)]
    )
    count = min(pop.n_merchants, max(2, pop.n_merchants // 250))
    return np.sort(rng.choice(pop.n_merchants, size=count, replace=False)).astype(np.int64)


def _merchant_compromise(
    pop: Population, rng: np.random.Generator, merchants: IntArray, n: int, inflate: float
) -> Rows:
    """Fraudulent charges at compromised merchants, somewhat above the usual amounts."""
    users = sample_users(pop, rng, n)
    rows_merchants = merchants[rng.integers(0, len(merchants), n)]
    typical = np.exp(pop.user_mu[users] + pop.user_sigma[users] * rng.standard_normal(n))
    amount = typical * rng.uniform(1.5, 3.5, n)
    return Rows(
        user=users,
        card=sample_cards(pop, rng, users),
        merchant=rows_merchants,
        ts=sample_times(rng, n),
        amount=amount * inflate,
        new_device=np.zeros(n, dtype=bool),
        device=(users + 1) * 2,
        fraud=np.full(n, MERCHANT_COMPROMISE, dtype=np.int64),
    )


def _bust_out(pop: Population, rng: np.random.Generator, events: int, inflate: float) -> Rows:
    """1-3 medium-to-large purchases at home electronics/travel merchants, usual device."""
    sizes = rng.integers(1, 4, events).astype(np.int64)
    users = sample_users(pop, rng, events)
    cards = sample_cards(pop, rng, users)
    event = np.repeat(np.arange(events, dtype=np.int64), sizes)
    n = len(event)
    row_users = users[event]
    amount = np.exp(rng.normal(np.log(380.0), 0.45, n))
    return Rows(
        user=row_users,
        card=cards[event],
        merchant=pop.bust_out_by_country.pick(rng, pop.user_country[row_users]),
        ts=sample_times(rng, n),
        amount=amount * inflate,
        new_device=np.zeros(n, dtype=bool),
        device=(row_users + 1) * 2,
        fraud=np.full(n, BUST_OUT, dtype=np.int64),
    )


def fraud_transactions(
    config: SimulatorConfig, pop: Population, rng: np.random.Generator, day: date, budget: float
) -> Rows:
    """All fraud of ``day``: about ``budget`` rows split among the active patterns."""
    inflate = shift_inflation(config.drift_intensity("covariate_shift", day))
    share = min(_BUST_OUT_SHARE * config.drift_intensity("new_fraud_pattern", day), 0.9)
    bust = share > 0.0
    scale = 1.0 - share
    mix = {k: v * scale * budget for k, v in _FRAUD_MIX.items()}
    parts = [
        _card_testing(pop, rng, day, int(rng.poisson(mix[CARD_TESTING] / 12.5))),
        _account_takeover(pop, rng, day, int(rng.poisson(mix[ACCOUNT_TAKEOVER] / 3.5)), inflate),
        _merchant_compromise(
            pop,
            rng,
            _compromised_merchants(config, pop, day),
            int(rng.poisson(mix[MERCHANT_COMPROMISE])),
            inflate,
        ),
    ]
    if bust:
        parts.append(_bust_out(pop, rng, int(rng.poisson(share * budget / 2.0)), inflate))
    return Rows.concat(parts)
