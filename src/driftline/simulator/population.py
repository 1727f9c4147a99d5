"""The simulated population: users, cards, devices and merchants.

It is derived only from ``(seed, anchor)`` and its sizes (and cached), so every day
of a simulation draws from the same people and shops.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date

import numpy as np

from driftline.core import schemas
from driftline.simulator.config import SimulatorConfig
from driftline.simulator.units import BoolArray, FloatArray, IntArray

_CATEGORY_WEIGHT = np.array([0.2, 0.17, 0.08, 0.05, 0.06, 0.1, 0.08, 0.05, 0.08, 0.13])
#: Probability that a merchant of each category sells online.
_CATEGORY_ONLINE = np.array([0.1, 0.05, 0.0, 0.7, 0.5, 0.45, 1.0, 1.0, 0.15, 0.8])
_MERCHANT_COUNTRY_WEIGHT = np.array(
    [0.2, 0.15, 0.08, 0.1, 0.1, 0.12, 0.1, 0.05, 0.04, 0.03, 0.01, 0.01, 0.005, 0.005]
)
_USER_COUNTRY_WEIGHT = np.array(
    [0.22, 0.16, 0.08, 0.1, 0.1, 0.13, 0.1, 0.05, 0.04, 0.02, 0.0, 0.0, 0.0, 0.0]
)

#: Favourite merchants per user: the first ``_N_POS_FAVOURITES`` are local shops.
N_FAVOURITES = 6
_N_POS_FAVOURITES = 4
#: Seed stream of the population (and the weekly compromised merchants), apart from
#: the day seeds.
POPULATION_STREAM = 0x504F50

_CATEGORY = {name: i for i, name in enumerate(schemas.MERCHANT_CATEGORIES)}


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
class Population:
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
def _population(seed: int, anchor: date, n_users: int, n_merchants: int) -> Population:
    """Derive the population from ``(seed, anchor)`` and its sizes."""
    rng = np.random.default_rng([seed, anchor.toordinal(), POPULATION_STREAM])
    category, m_country, online = _merchants(rng, n_merchants)
    n_countries = len(schemas.COUNTRIES)
    user_country = rng.choice(
        n_countries, size=n_users, p=_USER_COUNTRY_WEIGHT / _USER_COUNTRY_WEIGHT.sum()
    ).astype(np.int64)
    activity = rng.gamma(2.0, 1.0, n_users)
    card_count = np.where(rng.random(n_users) < 0.3, 2, 1).astype(np.int64)
    pos_by_country = _groups(~online, m_country, n_countries)
    online_idx = np.flatnonzero(online).astype(np.int64)
    favourites = np.empty((n_users, N_FAVOURITES), dtype=np.int64)
    for slot in range(_N_POS_FAVOURITES):
        favourites[:, slot] = pos_by_country.pick(rng, user_country)
    favourites[:, _N_POS_FAVOURITES:] = online_idx[
        rng.integers(0, len(online_idx), (n_users, N_FAVOURITES - _N_POS_FAVOURITES))
    ]
    codes = [_CATEGORY[c] for c in ("digital_goods", "gaming")]
    shift_codes = [_CATEGORY[c] for c in ("electronics", "digital_goods", "fashion", "gaming")]
    bust_codes = [_CATEGORY[c] for c in ("electronics", "travel")]
    return Population(
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


def population_of(config: SimulatorConfig) -> Population:
    """The (cached) population of ``config``."""
    return _population(config.seed, config.anchor, config.users, config.merchants)


def sample_users(pop: Population, rng: np.random.Generator, n: int) -> IntArray:
    """``n`` users drawn by activity."""
    users = np.searchsorted(pop.user_cdf, rng.random(n), side="right")
    return np.minimum(users, pop.n_users - 1).astype(np.int64)


def sample_cards(pop: Population, rng: np.random.Generator, users: IntArray) -> IntArray:
    """One of each user's cards (card ids are 1-based)."""
    offset = (rng.random(len(users)) * pop.card_count[users]).astype(np.int64)
    return pop.card_start[users] + offset + 1
