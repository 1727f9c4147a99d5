"""``core.fresh.fresh_features`` equals its plain definition on random histories.

The serving path computes the fresh features of every scored row, so
``fresh_features`` finds an entity's earlier events once and cuts them once per window.
:func:`reference` is the definition written out plainly (each feature filters the
entity's events on its own, as the function did before it was made faster); both must
give the very same values, float for float, on histories with window edges, equal
times, replayed ids (with other contents), missing devices and countries, later
events and the scored transaction itself.
"""

from __future__ import annotations

import math
import random
from statistics import median

import pytest

from driftline.core.feature_spec import FRESH_SPEC, SECONDS_SINCE_CAP, FreshFeature
from driftline.core.fresh import MEDIAN_FLOOR, Event, fresh_features

US = 1_000_000
T = 1_768_046_400 * US
WINDOWS_US = sorted({int(f.window.total_seconds() * US) for f in FRESH_SPEC})


def _earlier(txn: Event, events: list[Event], entity: str) -> list[Event]:
    """Events strictly before ``txn`` in (ts, id) order and inside the entity's longest
    window; of events sharing an id, the first one there counts."""
    longest = max(int(f.window.total_seconds() * US) for f in FRESH_SPEC if f.entity == entity)
    seen: dict[str, Event] = {}
    for e in events:
        inside = e.ts_us > txn.ts_us - longest
        if inside and (e.ts_us, e.transaction_id) < (txn.ts_us, txn.transaction_id):
            seen.setdefault(e.transaction_id, e)
    return list(seen.values())


def _value(feature: FreshFeature, txn: Event, events: list[Event]) -> float:
    """One feature, straight from its definition (``FreshFeature``'s docstring)."""
    start = txn.ts_us - int(feature.window.total_seconds() * US)
    inside = [e for e in _earlier(txn, events, feature.entity) if e.ts_us > start]
    name = feature.name
    if "_amount_sum_" in name:
        return math.fsum(e.amount for e in inside)
    if "_distinct_merchants_" in name:
        return float(len({e.merchant_id for e in inside}))
    if "_distinct_devices_" in name:
        return float(len({e.device_id for e in inside if e.device_id is not None}))
    if "_txn_count_" in name:
        return float(len(inside))
    if name.endswith("_device_new"):  # an unknown device is always new
        if not inside:
            return 0.0
        return float(txn.device_id is None or txn.device_id not in {e.device_id for e in inside})
    if name.endswith("_country_foreign"):
        return float(bool(inside) and txn.country not in {e.country for e in inside})
    if name.endswith("_merchant_new"):
        return float(bool(inside) and txn.merchant_id not in {e.merchant_id for e in inside})
    if name.endswith("_amount_to_median_7d"):
        if not inside:
            return 1.0
        return txn.amount / max(median(e.amount for e in inside), MEDIAN_FLOOR)
    if name.endswith("_seconds_since_prev"):
        if not inside:
            return SECONDS_SINCE_CAP
        return min((txn.ts_us - max(e.ts_us for e in inside)) / US, SECONDS_SINCE_CAP)
    raise AssertionError(f"no rule for {name}")


def reference(txn: Event, users: list[Event], merchants: list[Event]) -> dict[str, float]:
    """Every fresh feature of ``txn``, each computed on its own."""
    return {f.name: _value(f, txn, users if f.entity == "user" else merchants) for f in FRESH_SPEC}


def _offset(rng: random.Random) -> int:
    """How long before ``T``: often exactly on or next to a window edge, or after T."""
    edge = rng.choice(WINDOWS_US)
    return rng.choice(
        [
            edge,
            edge - 1,
            edge + 1,
            0,
            -rng.randrange(1, 3600 * US),
            rng.randrange(0, 8 * 86_400 * US),
        ]
    )


def _history(rng: random.Random, txn: Event, size: int) -> list[Event]:
    events: list[Event] = []
    for i in range(size):
        if events and rng.random() < 0.15:  # a replayed id, maybe with other contents
            old = rng.choice(events)
            events.append(
                Event(old.ts_us, old.transaction_id, 1, 10, rng.uniform(1, 50), None, None)
            )
            continue
        events.append(
            Event(
                T - _offset(rng),
                rng.choice(["a", "x", "z", f"t{i}"]) if rng.random() < 0.3 else f"t{i}",
                txn.user_id,
                rng.choice([10, 11, 12]),
                rng.choice([0.001, 5.0, rng.uniform(0.5, 900.0)]),
                rng.choice(["d1", "d2", None]),
                rng.choice(["DE", "FR", None]),
            )
        )
    events.append(txn)  # the scored transaction itself is in what the store returns
    rng.shuffle(events)
    return events


@pytest.mark.parametrize("seed", range(6))
def test_fresh_features_equal_the_plain_definition(seed: int) -> None:
    rng = random.Random(seed)
    for case in range(150):
        txn = Event(
            T,
            "x",
            1,
            rng.choice([10, 11, 13]),
            rng.uniform(0.5, 500.0),
            rng.choice(["d1", "d3", None]),
            rng.choice(["DE", "US", None]),
        )
        users = _history(rng, txn, rng.randrange(0, 40))
        merchants = _history(rng, txn, rng.randrange(0, 15))
        got = fresh_features(txn, users, merchants)
        assert list(got) == [f.name for f in FRESH_SPEC]
        assert got == reference(txn, users, merchants), f"seed {seed} case {case}"
