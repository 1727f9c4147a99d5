"""Deterministic, vectorized card-transaction simulator.

The simulator is the upstream "payment system" of the reference use case. It writes
one day of card transactions, the chargebacks (fraud labels) reported that day and
the ground truth into the lake's landing zone::

    {lake_uri}/landing/{dataset}/dt=YYYY-MM-DD/{dataset}.parquet
    {lake_uri}/simulator_truth/dt=YYYY-MM-DD/truth.parquet

Design:

* The population (users, cards, devices, merchants) is derived only from
  ``(seed, anchor)``; every day's randomness only from ``(seed, day)``, so any day
  can be regenerated alone and equals the same day generated inside a range.
* Legit spending follows per-user habits (favourite merchants, home country,
  known devices, lognormal amounts around a typical spend) with an hour-of-day
  profile and weekday volume variation.
* Fraud comes in learnable patterns: ``card_testing`` (bursts of tiny online
  amounts), ``account_takeover`` (new device, foreign merchants, large amounts),
  ``merchant_compromise`` (a few merchants per week with a high fraud share) and,
  under the ``new_fraud_pattern`` drift scenario, ``bust_out`` (large amounts at
  home with the usual device, which evades the older signals).
* Chargebacks arrive 1..``max_label_delay_days`` days after the transaction.
* Bad batches deliberately corrupt one day's landing file for validation to catch.

Everything is pure numpy over whole days (no per-transaction Python loops): a
million transactions per day take a few seconds.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Literal, get_args

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from driftline.core import lake, schemas
from driftline.core.interval import Interval

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

ScenarioName = Literal["covariate_shift", "new_fraud_pattern"]
BadBatchKind = Literal[
    "missing_column",
    "wrong_type",
    "null_keys",
    "negative_amount",
    "absurd_amount",
    "duplicate_ids",
    "empty_file",
    "ts_outside_interval",
    "unknown_currency",
]
LandingDataset = Literal["transactions", "labels"]

#: Bad-batch kinds that make sense for the labels dataset (it has no amount/currency).
LABEL_BAD_BATCH_KINDS: frozenset[str] = frozenset(
    {
        "missing_column",
        "wrong_type",
        "null_keys",
        "duplicate_ids",
        "empty_file",
        "ts_outside_interval",
    }
)

#: ``fraud_type`` values of the ground truth; index 0 is legit.
FRAUD_TYPES = ("", "card_testing", "account_takeover", "merchant_compromise", "bust_out")
_LEGIT, _CARD_TESTING, _ACCOUNT_TAKEOVER, _MERCHANT_COMPROMISE, _BUST_OUT = range(5)

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
_EPOCH = date(1970, 1, 1)

#: Relative transaction volume per hour of day (UTC): quiet nights, midday and evening peaks.
# fmt: off
_HOUR_PROFILE = np.array(
    [0.8, 0.5, 0.35, 0.3, 0.35, 0.6, 1.2, 2.2, 3.2, 3.8, 4.2, 4.8,
     5.6, 5.4, 4.6, 4.3, 4.6, 5.4, 6.2, 6.4, 5.6, 4.2, 2.8, 1.6]
)
# fmt: on
_HOUR_CDF = np.cumsum(_HOUR_PROFILE) / _HOUR_PROFILE.sum()
#: Volume factor per weekday (Monday first); mean 1.
_WEEKDAY_FACTOR = (0.95, 0.97, 1.0, 1.02, 1.12, 1.1, 0.84)

_CATEGORY_WEIGHT = np.array([0.2, 0.17, 0.08, 0.05, 0.06, 0.1, 0.08, 0.05, 0.08, 0.13])
#: Probability that a merchant of each category sells online.
_CATEGORY_ONLINE = np.array([0.1, 0.05, 0.0, 0.7, 0.5, 0.45, 1.0, 1.0, 0.15, 0.8])
#: Log of the amount multiplier per category (relative to the user's typical spend).
_CATEGORY_LOG_AMOUNT = np.log(np.array([1.0, 0.8, 1.3, 4.0, 3.0, 1.6, 0.3, 0.4, 0.6, 1.8]))
_MERCHANT_COUNTRY_WEIGHT = np.array(
    [0.2, 0.15, 0.08, 0.1, 0.1, 0.12, 0.1, 0.05, 0.04, 0.03, 0.01, 0.01, 0.005, 0.005]
)
_USER_COUNTRY_WEIGHT = np.array(
    [0.22, 0.16, 0.08, 0.1, 0.1, 0.13, 0.1, 0.05, 0.04, 0.02, 0.0, 0.0, 0.0, 0.0]
)
_EURO_COUNTRIES = frozenset({"DE", "FR", "NL", "ES", "IT"})
_OTHER_CURRENCY = {"GB": "GBP", "US": "USD", "CH": "CHF", "SE": "SEK", "PL": "PLN"}
#: Currency index (into ``schemas.CURRENCIES``) of each country in ``schemas.COUNTRIES``.
_COUNTRY_CURRENCY = np.array(
    [
        schemas.CURRENCIES.index(
            "EUR" if country in _EURO_COUNTRIES else _OTHER_CURRENCY.get(country, "USD")
        )
        for country in schemas.COUNTRIES
    ]
)

_N_FAVOURITES = 6
_N_POS_FAVOURITES = 4
_FAVOURITE_CDF = np.cumsum([0.3, 0.22, 0.17, 0.13, 0.1, 0.08])
_SHARE_FAVOURITE = 0.78
_SHARE_TRAVEL = 0.03
_SHARE_ONLINE_OTHER = 0.45
_SHARE_SECONDARY_DEVICE = 0.07
#: Fraud budget split (share of fraud rows, mean rows per event).
_FRAUD_MIX = {_CARD_TESTING: 0.3, _ACCOUNT_TAKEOVER: 0.3, _MERCHANT_COMPROMISE: 0.4}
_BUST_OUT_SHARE = 0.3
_REPORT_PROBABILITY = 0.9
_DELAY_DECAY = 0.7
_POPULATION_STREAM = 0x504F50  # keeps population seeds apart from day seeds
_BAD_BATCH_STREAM = 0xBAD

_CATEGORY = {name: i for i, name in enumerate(schemas.MERCHANT_CATEGORIES)}
_COUNTRY = {name: i for i, name in enumerate(schemas.COUNTRIES)}


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftScenario:
    """A named drift that is active from ``start`` (inclusive) on.

    Attributes:
        name: ``covariate_shift`` (amounts inflate ~30%, more online spending and a
            shifted category mix) or ``new_fraud_pattern`` (concept drift: the
            ``bust_out`` fraud pattern appears).
        start: First day the drift is active.
    """

    name: ScenarioName
    start: date

    def __post_init__(self) -> None:
        if self.name not in get_args(ScenarioName):
            raise ValueError(f"unknown drift scenario {self.name!r}")

    def active(self, day: date) -> bool:
        """Whether the drift is active on ``day``."""
        return day >= self.start


@dataclass(frozen=True)
class BadBatch:
    """A deliberately broken landing file of one dataset on one day.

    Attributes:
        kind: The defect; see :data:`BadBatchKind`. ``negative_amount``,
            ``absurd_amount`` and ``unknown_currency`` only apply to transactions.
        day: Day whose landing file is broken.
        dataset: ``transactions`` or ``labels``.
    """

    kind: BadBatchKind
    day: date
    dataset: LandingDataset = "transactions"

    def __post_init__(self) -> None:
        if self.kind not in get_args(BadBatchKind):
            raise ValueError(f"unknown bad batch kind {self.kind!r}")
        if self.dataset not in get_args(LandingDataset):
            raise ValueError(f"unknown landing dataset {self.dataset!r}")
        if self.dataset == "labels" and self.kind not in LABEL_BAD_BATCH_KINDS:
            raise ValueError(f"bad batch kind {self.kind!r} does not apply to labels")


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that determines the simulated data.

    Attributes:
        seed: Seed of all randomness.
        rows_per_day: Mean number of transactions per day (weekdays vary around it).
        n_users: Population size; defaults to ``max(200, rows_per_day // 4)``.
        n_merchants: Merchant count; defaults to ``max(50, rows_per_day // 20)``.
        anchor: First simulated day; the population is derived from it and ``seed``.
        fraud_rate: Approximate share of fraudulent transactions.
        scenarios: Drift scenarios.
        bad_batches: Broken landing files to produce in :func:`write_landing`.
        max_label_delay_days: Longest delay between a transaction and its chargeback.
    """

    seed: int = 7
    rows_per_day: int = 5000
    n_users: int | None = None
    n_merchants: int | None = None
    anchor: date = date(2026, 1, 1)
    fraud_rate: float = 0.01
    scenarios: tuple[DriftScenario, ...] = ()
    bad_batches: tuple[BadBatch, ...] = ()
    max_label_delay_days: int = 10

    def __post_init__(self) -> None:
        if self.rows_per_day < 1:
            raise ValueError("rows_per_day must be positive")
        if not 0.0 <= self.fraud_rate <= 0.5:
            raise ValueError("fraud_rate must lie in [0, 0.5]")
        if self.max_label_delay_days < 1:
            raise ValueError("max_label_delay_days must be at least 1")
        if self.n_users is not None and self.n_users < 1:
            raise ValueError("n_users must be positive")
        if self.n_merchants is not None and self.n_merchants < 2:
            raise ValueError("n_merchants must be at least 2")

    @property
    def users(self) -> int:
        """Resolved population size."""
        return self.n_users if self.n_users is not None else max(200, self.rows_per_day // 4)

    @property
    def merchants(self) -> int:
        """Resolved merchant count."""
        if self.n_merchants is not None:
            return self.n_merchants
        return max(50, self.rows_per_day // 20)

    def drift_active(self, name: ScenarioName, day: date) -> bool:
        """Whether any scenario called ``name`` is active on ``day``."""
        return any(s.name == name and s.active(day) for s in self.scenarios)


@dataclass(frozen=True)
class DayResult:
    """What :func:`write_landing` wrote for one day."""

    day: date
    transactions_path: str
    labels_path: str
    truth_path: str
    transaction_rows: int
    label_rows: int
    fraud_rows: int
    bad_batches: tuple[BadBatch, ...]


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`write_landing` wrote, day by day."""

    days: tuple[DayResult, ...]

    @property
    def transaction_rows(self) -> int:
        """Transactions written over all days (as landed, bad batches included)."""
        return sum(d.transaction_rows for d in self.days)

    @property
    def label_rows(self) -> int:
        """Chargebacks written over all days (as landed)."""
        return sum(d.label_rows for d in self.days)

    @property
    def fraud_rows(self) -> int:
        """Fraudulent transactions generated over all days (ground truth)."""
        return sum(d.fraud_rows for d in self.days)

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file written."""
        return tuple(
            p for d in self.days for p in (d.transactions_path, d.labels_path, d.truth_path)
        )


# --------------------------------------------------------------------------------------
# Population
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Groups:
    """Members of a set grouped by a key, for vectorized "random member of group k".

    Empty groups fall back to the whole set (``start``/``count`` point at a copy of
    all members placed after the grouped ones).
    """

    members: IntArray
    start: IntArray
    count: IntArray

    def pick(self, rng: np.random.Generator, keys: IntArray) -> IntArray:
        """One uniformly random member of group ``keys[i]`` for every ``i``."""
        offset = (rng.random(len(keys)) * self.count[keys]).astype(np.int64)
        picked: IntArray = self.members[self.start[keys] + offset]
        return picked


def _groups(mask: BoolArray, key: IntArray, n_keys: int) -> _Groups:
    """Group the indices where ``mask`` holds by ``key`` (see :class:`_Groups`)."""
    members = np.flatnonzero(mask).astype(np.int64)
    if len(members) == 0:
        members = np.arange(len(mask), dtype=np.int64)
    ordered = members[np.argsort(key[members], kind="stable")]
    count = np.bincount(key[members], minlength=n_keys).astype(np.int64)
    start = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    empty = count == 0
    start[empty] = len(ordered)
    count[empty] = len(members)
    return _Groups(np.concatenate([ordered, members]), start, count)


@dataclass(frozen=True)
class _Population:
    """Users, cards, devices and merchants (indices are 0-based; ids are index + 1)."""

    user_country: IntArray
    user_mu: FloatArray
    user_sigma: FloatArray
    user_cdf: FloatArray
    card_start: IntArray
    card_count: IntArray
    favourites: IntArray
    merchant_category: IntArray
    merchant_country: IntArray
    merchant_online: BoolArray
    pos_by_country: _Groups
    online: IntArray
    card_testing: IntArray
    shift_targets: IntArray
    bust_out_by_country: _Groups

    @property
    def n_users(self) -> int:
        """Number of users."""
        return len(self.user_country)

    @property
    def n_merchants(self) -> int:
        """Number of merchants."""
        return len(self.merchant_category)


def _force_online_category(category: IntArray, online: BoolArray, wanted: tuple[str, ...]) -> None:
    """Make sure some online merchant of each ``wanted`` category exists (in place)."""
    for slot, name in enumerate(wanted):
        code = _CATEGORY[name]
        if not np.any((category == code) & online):
            category[slot] = code
            online[slot] = True


def _merchants(rng: np.random.Generator, n: int) -> tuple[IntArray, IntArray, BoolArray]:
    """Category, country and online flag of ``n`` merchants."""
    category = rng.choice(
        len(_CATEGORY_WEIGHT), size=n, p=_CATEGORY_WEIGHT / _CATEGORY_WEIGHT.sum()
    ).astype(np.int64)
    country = rng.choice(
        len(_MERCHANT_COUNTRY_WEIGHT),
        size=n,
        p=_MERCHANT_COUNTRY_WEIGHT / _MERCHANT_COUNTRY_WEIGHT.sum(),
    ).astype(np.int64)
    online = rng.random(n) < _CATEGORY_ONLINE[category]
    _force_online_category(category, online, ("digital_goods", "gaming", "electronics", "travel"))
    return category, country, online


@functools.lru_cache(maxsize=4)
def _population(seed: int, anchor: date, n_users: int, n_merchants: int) -> _Population:
    """Derive the population from ``(seed, anchor)`` and its sizes."""
    rng = np.random.default_rng([seed, anchor.toordinal(), _POPULATION_STREAM])
    category, m_country, online = _merchants(rng, n_merchants)
    n_countries = len(schemas.COUNTRIES)
    user_country = rng.choice(
        n_countries, size=n_users, p=_USER_COUNTRY_WEIGHT / _USER_COUNTRY_WEIGHT.sum()
    ).astype(np.int64)
    activity = rng.gamma(2.0, 1.0, n_users)
    card_count = np.where(rng.random(n_users) < 0.3, 2, 1).astype(np.int64)
    pos_by_country = _groups(~online, m_country, n_countries)
    online_idx = np.flatnonzero(online).astype(np.int64)
    favourites = np.empty((n_users, _N_FAVOURITES), dtype=np.int64)
    for slot in range(_N_POS_FAVOURITES):
        favourites[:, slot] = pos_by_country.pick(rng, user_country)
    favourites[:, _N_POS_FAVOURITES:] = online_idx[
        rng.integers(0, len(online_idx), (n_users, _N_FAVOURITES - _N_POS_FAVOURITES))
    ]
    codes = [_CATEGORY[c] for c in ("digital_goods", "gaming")]
    shift_codes = [_CATEGORY[c] for c in ("electronics", "digital_goods", "fashion", "gaming")]
    bust_codes = [_CATEGORY[c] for c in ("electronics", "travel")]
    return _Population(
        user_country=user_country,
        user_mu=rng.normal(np.log(35.0), 0.5, n_users),
        user_sigma=rng.uniform(0.3, 0.7, n_users),
        user_cdf=np.cumsum(activity) / activity.sum(),
        card_start=np.concatenate([[0], np.cumsum(card_count)[:-1]]).astype(np.int64),
        card_count=card_count,
        favourites=favourites,
        merchant_category=category,
        merchant_country=m_country,
        merchant_online=online,
        pos_by_country=pos_by_country,
        online=online_idx,
        card_testing=np.flatnonzero(online & np.isin(category, codes)).astype(np.int64),
        shift_targets=np.flatnonzero(online & np.isin(category, shift_codes)).astype(np.int64),
        bust_out_by_country=_groups(np.isin(category, bust_codes), m_country, n_countries),
    )


def _population_of(config: SimulatorConfig) -> _Population:
    """The (cached) population of ``config``."""
    return _population(config.seed, config.anchor, config.users, config.merchants)


# --------------------------------------------------------------------------------------
# Rows of one day
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Rows:
    """Transactions as parallel arrays (``ts`` in microseconds since the day's start)."""

    user: IntArray
    card: IntArray
    merchant: IntArray
    ts: IntArray
    amount: FloatArray
    new_device: BoolArray
    device: IntArray
    fraud: IntArray

    @staticmethod
    def concat(parts: list[_Rows]) -> _Rows:
        """Concatenate row blocks."""
        names = _Rows.__dataclass_fields__
        return _Rows(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in names})

    def take(self, index: IntArray) -> _Rows:
        """Rows at ``index``."""
        names = _Rows.__dataclass_fields__
        return _Rows(**{name: getattr(self, name)[index] for name in names})


def _sample_users(pop: _Population, rng: np.random.Generator, n: int) -> IntArray:
    """``n`` users drawn by activity."""
    users = np.searchsorted(pop.user_cdf, rng.random(n), side="right")
    return np.minimum(users, pop.n_users - 1).astype(np.int64)


def _sample_cards(pop: _Population, rng: np.random.Generator, users: IntArray) -> IntArray:
    """One of each user's cards (card ids are 1-based)."""
    offset = (rng.random(len(users)) * pop.card_count[users]).astype(np.int64)
    return pop.card_start[users] + offset + 1


def _sample_times(rng: np.random.Generator, n: int) -> IntArray:
    """``n`` times of day (microseconds) following the hour-of-day profile."""
    hours = np.minimum(np.searchsorted(_HOUR_CDF, rng.random(n), side="right"), 23)
    return hours.astype(np.int64) * HOUR_US + rng.integers(0, HOUR_US, n)


def _legit_amounts(
    pop: _Population, rng: np.random.Generator, users: IntArray, merchants: IntArray
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
    pop: _Population, rng: np.random.Generator, users: IntArray, shifted: bool
) -> IntArray:
    """Mostly favourite merchants; otherwise local shops, online shops or travel."""
    n = len(users)
    slot = np.searchsorted(_FAVOURITE_CDF, rng.random(n) * _FAVOURITE_CDF[-1], side="right")
    merchants: IntArray = pop.favourites[users, np.minimum(slot, _N_FAVOURITES - 1)]
    u = rng.random(n)
    other = u >= _SHARE_FAVOURITE
    travel = u >= 1.0 - _SHARE_TRAVEL
    online_share = _SHARE_ONLINE_OTHER + (0.25 if shifted else 0.0)
    to_online = other & ~travel & (rng.random(n) < online_share)
    local = other & ~travel & ~to_online
    merchants[to_online] = pop.online[rng.integers(0, len(pop.online), int(to_online.sum()))]
    merchants[local] = pop.pos_by_country.pick(rng, pop.user_country[users[local]])
    abroad = rng.integers(0, len(schemas.COUNTRIES), int(travel.sum()))
    merchants[travel] = pop.pos_by_country.pick(rng, abroad)
    if shifted and len(pop.shift_targets):
        moved = rng.random(n) < 0.15
        merchants[moved] = pop.shift_targets[
            rng.integers(0, len(pop.shift_targets), int(moved.sum()))
        ]
    return merchants


def _legit(pop: _Population, rng: np.random.Generator, n: int, shifted: bool) -> _Rows:
    """``n`` legit transactions following the users' habits."""
    users = _sample_users(pop, rng, n)
    merchants = _legit_merchants(pop, rng, users, shifted)
    amount = _legit_amounts(pop, rng, users, merchants) * (1.3 if shifted else 1.0)
    secondary = rng.random(n) < _SHARE_SECONDARY_DEVICE
    return _Rows(
        user=users,
        card=_sample_cards(pop, rng, users),
        merchant=merchants,
        ts=_sample_times(rng, n),
        amount=amount,
        new_device=np.zeros(n, dtype=bool),
        device=(users + 1) * 2 + secondary,
        fraud=np.full(n, _LEGIT, dtype=np.int64),
    )


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


def _card_testing(pop: _Population, rng: np.random.Generator, day: date, events: int) -> _Rows:
    """Bursts of 5-20 tiny amounts within minutes on one card at online digital merchants."""
    sizes = rng.integers(5, 21, events).astype(np.int64)
    users = _sample_users(pop, rng, events)
    cards = _sample_cards(pop, rng, users)
    event, ts = _bursts(rng, sizes, 5 * SECOND_US, 90 * SECOND_US)
    pair = pop.card_testing[rng.integers(0, len(pop.card_testing), (events, 2))]
    merchants = pair[event, rng.integers(0, 2, len(event))]
    n = len(event)
    return _Rows(
        user=users[event],
        card=cards[event],
        merchant=merchants,
        ts=ts,
        amount=rng.uniform(0.5, 4.99, n),
        new_device=np.ones(n, dtype=bool),
        device=_new_devices(day, 0, events)[event],
        fraud=np.full(n, _CARD_TESTING, dtype=np.int64),
    )


def _foreign_merchants(pop: _Population, rng: np.random.Generator, home: IntArray) -> IntArray:
    """Random merchants outside each row's ``home`` country (best effort)."""
    merchants = rng.integers(0, pop.n_merchants, len(home)).astype(np.int64)
    for _ in range(32):
        clash = pop.merchant_country[merchants] == home
        if not clash.any():
            break
        merchants[clash] = rng.integers(0, pop.n_merchants, int(clash.sum()))
    return merchants


def _account_takeover(
    pop: _Population, rng: np.random.Generator, day: date, events: int, inflate: float
) -> _Rows:
    """2-5 large amounts within an hour from a new device at foreign merchants."""
    sizes = rng.integers(2, 6, events).astype(np.int64)
    users = _sample_users(pop, rng, events)
    cards = _sample_cards(pop, rng, users)
    event, ts = _bursts(rng, sizes, MINUTE_US, 14 * MINUTE_US)
    n = len(event)
    row_users = users[event]
    amount = np.exp(pop.user_mu[row_users] + rng.normal(1.7, 0.35, n))
    return _Rows(
        user=row_users,
        card=cards[event],
        merchant=_foreign_merchants(pop, rng, pop.user_country[row_users]),
        ts=ts,
        amount=np.maximum(amount, 150.0) * inflate,
        new_device=np.ones(n, dtype=bool),
        device=_new_devices(day, 500_000, events)[event],
        fraud=np.full(n, _ACCOUNT_TAKEOVER, dtype=np.int64),
    )


def _compromised_merchants(config: SimulatorConfig, pop: _Population, day: date) -> IntArray:
    """The merchants compromised during ``day``'s week (a new set every 7 days)."""
    period = (day - config.anchor).days // 7
    rng = np.random.default_rng(
        [config.seed, config.anchor.toordinal(), _POPULATION_STREAM, period + (1 << 20)]
    )
    count = min(pop.n_merchants, max(2, pop.n_merchants // 250))
    return np.sort(rng.choice(pop.n_merchants, size=count, replace=False)).astype(np.int64)


def _merchant_compromise(
    pop: _Population, rng: np.random.Generator, merchants: IntArray, n: int, inflate: float
) -> _Rows:
    """Fraudulent charges at compromised merchants, somewhat above the usual amounts."""
    users = _sample_users(pop, rng, n)
    rows_merchants = merchants[rng.integers(0, len(merchants), n)]
    typical = np.exp(pop.user_mu[users] + pop.user_sigma[users] * rng.standard_normal(n))
    amount = typical * rng.uniform(1.5, 3.5, n)
    return _Rows(
        user=users,
        card=_sample_cards(pop, rng, users),
        merchant=rows_merchants,
        ts=_sample_times(rng, n),
        amount=amount * inflate,
        new_device=np.zeros(n, dtype=bool),
        device=(users + 1) * 2,
        fraud=np.full(n, _MERCHANT_COMPROMISE, dtype=np.int64),
    )


def _bust_out(pop: _Population, rng: np.random.Generator, events: int, inflate: float) -> _Rows:
    """1-3 medium-to-large purchases at home electronics/travel merchants, usual device."""
    sizes = rng.integers(1, 4, events).astype(np.int64)
    users = _sample_users(pop, rng, events)
    cards = _sample_cards(pop, rng, users)
    event = np.repeat(np.arange(events, dtype=np.int64), sizes)
    n = len(event)
    row_users = users[event]
    amount = np.exp(rng.normal(np.log(380.0), 0.45, n))
    return _Rows(
        user=row_users,
        card=cards[event],
        merchant=pop.bust_out_by_country.pick(rng, pop.user_country[row_users]),
        ts=_sample_times(rng, n),
        amount=amount * inflate,
        new_device=np.zeros(n, dtype=bool),
        device=(row_users + 1) * 2,
        fraud=np.full(n, _BUST_OUT, dtype=np.int64),
    )


def _fraud(
    config: SimulatorConfig, pop: _Population, rng: np.random.Generator, day: date, budget: float
) -> _Rows:
    """All fraud of ``day``: about ``budget`` rows split among the active patterns."""
    inflate = 1.3 if config.drift_active("covariate_shift", day) else 1.0
    bust = config.drift_active("new_fraud_pattern", day)
    scale = (1.0 - _BUST_OUT_SHARE) if bust else 1.0
    mix = {k: v * scale * budget for k, v in _FRAUD_MIX.items()}
    parts = [
        _card_testing(pop, rng, day, int(rng.poisson(mix[_CARD_TESTING] / 12.5))),
        _account_takeover(pop, rng, day, int(rng.poisson(mix[_ACCOUNT_TAKEOVER] / 3.5)), inflate),
        _merchant_compromise(
            pop,
            rng,
            _compromised_merchants(config, pop, day),
            int(rng.poisson(mix[_MERCHANT_COMPROMISE])),
            inflate,
        ),
    ]
    if bust:
        parts.append(_bust_out(pop, rng, int(rng.poisson(_BUST_OUT_SHARE * budget / 2.0)), inflate))
    return _Rows.concat(parts)


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


def _day_seeds(config: SimulatorConfig, day: date) -> list[np.random.SeedSequence]:
    """Independent streams (legit, fraud, labels) of ``day``, all from ``[seed, day]``."""
    root = np.random.SeedSequence([config.seed, day.toordinal()])
    return root.spawn(3)


def _day_volume(config: SimulatorConfig, day: date) -> int:
    """Number of transactions on ``day`` (weekday seasonality around ``rows_per_day``)."""
    return max(1, round(config.rows_per_day * _WEEKDAY_FACTOR[day.weekday()]))


def _check_day(config: SimulatorConfig, day: date) -> None:
    """Reject days before the simulation's anchor."""
    if day < config.anchor:
        raise ValueError(f"day {day} precedes the simulation anchor {config.anchor}")


@functools.lru_cache(maxsize=2)
def _day_rows(config: SimulatorConfig, day: date) -> _Rows:
    """All transactions of ``day``, sorted by (ts, user), ``ts`` unique per user."""
    _check_day(config, day)
    pop = _population_of(config)
    legit_seed, fraud_seed, _ = _day_seeds(config, day)
    total = _day_volume(config, day)
    budget = total * config.fraud_rate
    legit = _legit(
        pop,
        np.random.default_rng(legit_seed),
        max(0, total - round(budget)),
        config.drift_active("covariate_shift", day),
    )
    fraud = _fraud(config, pop, np.random.default_rng(fraud_seed), day, budget)
    rows = _Rows.concat([legit, fraud])
    ts = _unique_per_user(rows.user, rows.ts)
    order = np.lexsort((np.arange(len(ts)), rows.user, ts))
    rows = rows.take(order)
    rows.ts[:] = ts[order]
    rows.amount[:] = np.round(rows.amount, 2)
    for name in _Rows.__dataclass_fields__:
        getattr(rows, name).setflags(write=False)
    return rows


# --------------------------------------------------------------------------------------
# Arrow tables
# --------------------------------------------------------------------------------------


def _day_start_us(day: date) -> int:
    """Microseconds since the epoch at ``day`` 00:00 UTC."""
    return (day - _EPOCH).days * DAY_US


def _timestamps(values: IntArray) -> pa.Array:
    """Arrow ``timestamp[us, UTC]`` array from epoch microseconds."""
    return pa.array(values, type=pa.int64()).cast(schemas.TIMESTAMP)


def _transaction_ids(day: date, positions: IntArray) -> pa.Array:
    """Ids ``t{YYYYMMDD}{position:08d}``."""
    digits = pc.utf8_lpad(pa.array(positions, type=pa.int64()).cast(pa.string()), 8, "0")
    return pc.binary_join_element_wise(f"t{day:%Y%m%d}", digits, "")


def _lookup(names: tuple[str, ...], codes: IntArray) -> pa.Array:
    """Strings ``names[codes[i]]``."""
    return pc.take(pa.array(names, type=pa.string()), pa.array(codes, type=pa.int64()))


def _device_ids(rows: _Rows) -> pa.Array:
    """``d{n}`` for the users' known devices, ``x{n}`` for never-seen fraud devices."""
    prefix = _lookup(("d", "x"), rows.new_device.astype(np.int64))
    number = pa.array(rows.device, type=pa.int64()).cast(pa.string())
    return pc.binary_join_element_wise(prefix, number, "")


def _transactions_table(pop: _Population, day: date, rows: _Rows) -> pa.Table:
    """The canonical transactions table of ``day``."""
    n = len(rows.ts)
    country = pop.merchant_country[rows.merchant]
    columns = {
        "transaction_id": _transaction_ids(day, np.arange(n, dtype=np.int64)),
        "ts": _timestamps(rows.ts + _day_start_us(day)),
        "user_id": pa.array(rows.user + 1, type=pa.int64()),
        "card_id": pa.array(rows.card, type=pa.int64()),
        "merchant_id": pa.array(rows.merchant + 1, type=pa.int64()),
        "merchant_category": _lookup(
            schemas.MERCHANT_CATEGORIES, pop.merchant_category[rows.merchant]
        ),
        "merchant_country": _lookup(schemas.COUNTRIES, country),
        "amount": pa.array(rows.amount, type=pa.float64()),
        "currency": _lookup(schemas.CURRENCIES, _COUNTRY_CURRENCY[country]),
        "channel": _lookup(schemas.CHANNELS, pop.merchant_online[rows.merchant].astype(np.int64)),
        "device_id": _device_ids(rows),
    }
    return pa.Table.from_arrays(list(columns.values()), schema=schemas.TRANSACTIONS)


TRUTH = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("is_fraud", pa.int64(), nullable=False),
        pa.field("fraud_type", pa.string(), nullable=False),
    ]
)


def _truth_table(day: date, rows: _Rows) -> pa.Table:
    """Ground truth of ``day`` (same row order as the transactions)."""
    ids = _transaction_ids(day, np.arange(len(rows.ts), dtype=np.int64))
    is_fraud = pa.array((rows.fraud != _LEGIT).astype(np.int64), type=pa.int64())
    return pa.Table.from_arrays([ids, is_fraud, _lookup(FRAUD_TYPES, rows.fraud)], schema=TRUTH)


def simulate_transactions(config: SimulatorConfig, day: date) -> tuple[pa.Table, pa.Table]:
    """Generate one day of transactions.

    Args:
        config: Simulator configuration.
        day: The day (not before ``config.anchor``).

    Returns:
        ``(transactions, truth)``: transactions matching :data:`schemas.TRANSACTIONS`
        sorted by ``ts`` then ``transaction_id``, and the ground truth
        (``transaction_id``, ``is_fraud``, ``fraud_type`` with ``""`` for legit) in the
        same order.
    """
    rows = _day_rows(config, day)
    pop = _population_of(config)
    return _transactions_table(pop, day, rows), _truth_table(day, rows)


# --------------------------------------------------------------------------------------
# Labels
# --------------------------------------------------------------------------------------


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
    rows = _day_rows(config, day)
    position = np.flatnonzero(rows.fraud != _LEGIT).astype(np.int64)
    rng = np.random.default_rng(_day_seeds(config, day)[2])
    n = len(position)
    reported = rng.random(n) < _REPORT_PROBABILITY
    cdf = _delay_cdf(config.max_label_delay_days)
    delay = np.minimum(np.searchsorted(cdf, rng.random(n), side="right"), len(cdf) - 1) + 1
    moment = rng.integers(0, DAY_US, n)
    keep = position[reported]
    report_day = day.toordinal() + delay[reported].astype(np.int64)
    label_ts = (report_day - _EPOCH.toordinal()) * DAY_US + moment[reported]
    return _Chargebacks(
        position=keep,
        user_id=rows.user[keep] + 1,
        merchant_id=rows.merchant[keep] + 1,
        transaction_ts=rows.ts[keep] + _day_start_us(day),
        report_day=report_day,
        label_ts=label_ts,
    )


def _labels_of(config: SimulatorConfig, tx_day: date, report_day: date) -> pa.Table:
    """Chargebacks of ``tx_day``'s transactions reported on ``report_day``."""
    cb = _chargebacks(config, tx_day)
    keep = cb.report_day == report_day.toordinal()
    columns = [
        _transaction_ids(tx_day, cb.position[keep]),
        pa.array(cb.user_id[keep], type=pa.int64()),
        pa.array(cb.merchant_id[keep], type=pa.int64()),
        _timestamps(cb.transaction_ts[keep]),
        _timestamps(cb.label_ts[keep]),
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
    _check_day(config, report_day)
    first = max(config.anchor, report_day - timedelta(days=config.max_label_delay_days))
    days = (first + timedelta(days=i) for i in range((report_day - first).days + 1))
    table = pa.concat_tables([_labels_of(config, d, report_day) for d in days])
    return table.sort_by([("label_ts", "ascending"), ("transaction_id", "ascending")])


# --------------------------------------------------------------------------------------
# Bad batches
# --------------------------------------------------------------------------------------

_MISSING_COLUMN = {"transactions": "amount", "labels": "is_fraud"}
_EVENT_TIME = schemas.EVENT_TIME_COLUMN


def _defect_rows(rng: np.random.Generator, n: int, share: float) -> BoolArray:
    """About ``share`` of ``n`` rows (at least one when there are rows)."""
    mask = rng.random(n) < share
    if n and not mask.any():
        mask[int(rng.integers(0, n))] = True
    return mask


def _set_column(table: pa.Table, name: str, values: pa.Array, nullable: bool = False) -> pa.Table:
    """Replace column ``name`` (keeping its position), possibly with a new type."""
    index = table.schema.get_field_index(name)
    old = table.schema.field(index)
    new_field = pa.field(name, values.type, nullable=old.nullable or nullable)
    return table.set_column(index, new_field, values)


def _with_nulls(table: pa.Table, name: str, mask: BoolArray) -> pa.Table:
    """Column ``name`` nulled where ``mask`` holds (the field becomes nullable)."""
    column = table.column(name).combine_chunks()
    values = pc.if_else(pa.array(mask), pa.scalar(None, column.type), column)
    return _set_column(table, name, values, nullable=True)


def _edit_float(
    table: pa.Table, name: str, mask: BoolArray, edit: Callable[[FloatArray], FloatArray]
) -> pa.Table:
    """Apply ``edit`` to the masked values of float column ``name``."""
    values = table.column(name).to_numpy().astype(np.float64)
    values[mask] = edit(values[mask])
    return _set_column(table, name, pa.array(values, type=pa.float64()))


def _wrong_type(table: pa.Table, dataset: str) -> pa.Table:
    """Amounts as strings like ``"12.50 EUR"`` (labels: ``is_fraud`` as ``"yes"``)."""
    if dataset == "labels":
        return _set_column(table, "is_fraud", pa.array(["yes"] * table.num_rows, pa.string()))
    amounts = table.column("amount").to_pylist()
    currencies = table.column("currency").to_pylist()
    text = [f"{a:.2f} {c}" for a, c in zip(amounts, currencies, strict=True)]
    return _set_column(table, "amount", pa.array(text, type=pa.string()))


def _duplicate_ids(table: pa.Table, rng: np.random.Generator, dataset: str) -> pa.Table:
    """Re-deliver ~2% of the rows (same ``transaction_id``), keeping the sort order."""
    repeat = np.flatnonzero(_defect_rows(rng, table.num_rows, 0.02))
    doubled = pa.concat_tables([table, table.take(pa.array(repeat, type=pa.int64()))])
    return doubled.sort_by([(_EVENT_TIME[dataset], "ascending"), ("transaction_id", "ascending")])


def _shift_times(table: pa.Table, rng: np.random.Generator, dataset: str) -> pa.Table:
    """Move ~3% of the event times to the previous or next day."""
    name = _EVENT_TIME[dataset]
    mask = _defect_rows(rng, table.num_rows, 0.03)
    values = table.column(name).cast(pa.int64()).to_numpy().copy()
    values[mask] += np.where(rng.random(int(mask.sum())) < 0.5, -DAY_US, DAY_US)
    return _set_column(table, name, _timestamps(values))


def _unknown_currency(table: pa.Table, rng: np.random.Generator) -> pa.Table:
    """Set ~2% of the currencies to ``"XXX"``."""
    mask = _defect_rows(rng, table.num_rows, 0.02)
    values = pc.if_else(pa.array(mask), pa.scalar("XXX"), table.column("currency"))
    return _set_column(table, "currency", values.combine_chunks())


def apply_bad_batch(table: pa.Table, bad: BadBatch, seed: int) -> pa.Table:
    """Corrupt a clean landing ``table`` as ``bad`` describes (deterministic per seed/day).

    Args:
        table: The clean table of ``bad.dataset`` on ``bad.day``.
        bad: The defect.
        seed: Simulator seed.

    Returns:
        The broken table. A defect whose column is already gone (e.g. after
        ``missing_column``) leaves the table unchanged.
    """
    kind_index = get_args(BadBatchKind).index(bad.kind)
    rng = np.random.default_rng([seed, bad.day.toordinal(), _BAD_BATCH_STREAM, kind_index])
    needed = {
        "missing_column": _MISSING_COLUMN[bad.dataset],
        "wrong_type": _MISSING_COLUMN[bad.dataset],
        "negative_amount": "amount",
        "absurd_amount": "amount",
        "unknown_currency": "currency",
    }.get(bad.kind)
    if needed is not None and needed not in table.column_names:
        log.warning("bad batch %s skipped: column %s is missing", bad, needed)
        return table
    n = table.num_rows
    if bad.kind == "missing_column":
        return table.drop_columns([_MISSING_COLUMN[bad.dataset]])
    if bad.kind == "wrong_type":
        return _wrong_type(table, bad.dataset)
    if bad.kind == "null_keys":
        nulled = _with_nulls(table, "transaction_id", _defect_rows(rng, n, 0.05))
        return _with_nulls(nulled, "user_id", _defect_rows(rng, n, 0.05))
    if bad.kind == "negative_amount":
        return _edit_float(table, "amount", _defect_rows(rng, n, 0.02), lambda a: -np.abs(a) - 1)
    if bad.kind == "absurd_amount":
        return _edit_float(
            table, "amount", _defect_rows(rng, n, 0.01), lambda a: np.full_like(a, 1e9)
        )
    if bad.kind == "duplicate_ids":
        return _duplicate_ids(table, rng, bad.dataset)
    if bad.kind == "empty_file":
        return table.slice(0, 0)
    if bad.kind == "ts_outside_interval":
        return _shift_times(table, rng, bad.dataset)
    return _unknown_currency(table, rng)


# --------------------------------------------------------------------------------------
# Landing files
# --------------------------------------------------------------------------------------


def landing_path(lake_uri: str, dataset: str, day: date) -> str:
    """URI of the landing file of ``dataset`` on ``day`` (the lake's landing layout)."""
    return lake.landing_file(lake_uri, dataset, day)


def truth_path(lake_uri: str, day: date) -> str:
    """URI of the simulator's ground truth of ``day``."""
    return f"{lake_uri.rstrip('/')}/simulator_truth/dt={day:%Y-%m-%d}/truth.parquet"


def write_parquet(uri: str, table: pa.Table) -> None:
    """Write ``table`` to ``uri`` atomically with fixed options (see :func:`lake.write_file`)."""
    lake.write_file(uri, table)


def _broken(
    config: SimulatorConfig, table: pa.Table, dataset: str, day: date
) -> tuple[pa.Table, tuple[BadBatch, ...]]:
    """Apply the bad batches of ``dataset`` on ``day`` to ``table``."""
    applied = tuple(b for b in config.bad_batches if b.day == day and b.dataset == dataset)
    for bad in applied:
        table = apply_bad_batch(table, bad, config.seed)
        log.info("applied bad batch %s to %s on %s", bad.kind, dataset, day)
    return table, applied


def _write_day(config: SimulatorConfig, lake_uri: str, day: date) -> DayResult:
    """Write transactions, labels and truth of one day."""
    transactions, truth = simulate_transactions(config, day)
    labels = simulate_labels(config, day)
    fraud_rows = int(pc.sum(truth.column("is_fraud")).as_py() or 0)
    transactions, bad_tx = _broken(config, transactions, "transactions", day)
    labels, bad_labels = _broken(config, labels, "labels", day)
    paths = (
        landing_path(lake_uri, "transactions", day),
        landing_path(lake_uri, "labels", day),
        truth_path(lake_uri, day),
    )
    for path, table in zip(paths, (transactions, labels, truth), strict=True):
        write_parquet(path, table)
    log.info(
        "simulated %s: %d transactions (%d fraud), %d chargebacks",
        day,
        transactions.num_rows,
        fraud_rows,
        labels.num_rows,
    )
    return DayResult(
        day, *paths, transactions.num_rows, labels.num_rows, fraud_rows, bad_tx + bad_labels
    )


def write_landing(
    config: SimulatorConfig,
    interval: Interval,
    lake_uri: str,
    progress: Callable[[date], None] | None = None,
) -> SimulationResult:
    """Write the landing files and ground truth of every day of ``interval``.

    Each day gets ``landing/transactions``, ``landing/labels`` (chargebacks reported
    that day) and ``simulator_truth``; configured bad batches corrupt the matching
    landing file. Rerunning rewrites identical bytes.

    Args:
        config: Simulator configuration.
        interval: Days to write (none before ``config.anchor``).
        lake_uri: Root of the lake (local path or fsspec URI).
        progress: Called with each day once it is written.

    Returns:
        Row counts and paths per day.
    """
    results = []
    for day in interval.days():
        results.append(_write_day(config, lake_uri, day))
        if progress is not None:
            progress(day)
    return SimulationResult(tuple(results))
