"""The one computation of the fresh features (``core.fresh.fresh_features``) on hand-built
histories: request-time features, window edges, event order, duplicates."""

from __future__ import annotations

import random
from datetime import timedelta
from typing import Any

import pytest

from driftline.core.feature_spec import FRESH_FEATURES, FRESH_SPEC, SECONDS_SINCE_CAP
from driftline.core.fresh import MEDIAN_FLOOR, Event, fresh_features

US = 1_000_000
#: The scored transaction's time (2026-01-10 12:00 UTC), microseconds.
T = 1_768_046_400 * US
MINUTE, HOUR, DAY = 60 * US, 3600 * US, 86_400 * US


def event(
    ago_us: int,
    transaction_id: str,
    *,
    user_id: int = 1,
    merchant_id: int = 10,
    amount: float = 20.0,
    device_id: str | None = "d1",
    country: str | None = "DE",
) -> Event:
    """An event ``ago_us`` microseconds before ``T``."""
    return Event(T - ago_us, transaction_id, user_id, merchant_id, amount, device_id, country)


def scored(**fields: Any) -> Event:
    """The scored transaction at ``T`` (id ``x``), with ``fields`` overridden."""
    return event(0, "x", **fields)


def user_features(txn: Event, history: list[Event]) -> dict[str, float]:
    """The features of ``txn`` from its user's ``history`` (no merchant events)."""
    return fresh_features(txn, history, [])


def test_every_feature_of_the_spec_in_declaration_order() -> None:
    assert tuple(user_features(scored(), [])) == FRESH_FEATURES


def test_a_user_with_no_history() -> None:
    values = user_features(scored(), [])
    assert values["fresh_user_txn_count_7d"] == 0
    assert values["fresh_user_device_new"] == 0
    assert values["fresh_user_country_foreign"] == 0
    assert values["fresh_user_merchant_new"] == 0
    assert values["fresh_user_amount_to_median_7d"] == 1.0
    assert values["fresh_user_seconds_since_prev"] == SECONDS_SINCE_CAP
    assert all(values[f.name] == 0 for f in FRESH_SPEC if f.kind == "velocity")


def test_new_device() -> None:
    history = [event(DAY, "a", device_id="d1"), event(2 * DAY, "b", device_id="d2")]
    assert user_features(scored(device_id="d3"), history)["fresh_user_device_new"] == 1
    assert user_features(scored(device_id="d2"), history)["fresh_user_device_new"] == 0
    # An unknown device is new; a device seen only 7 days ago or more is new again.
    assert user_features(scored(device_id=None), history)["fresh_user_device_new"] == 1
    old = [event(7 * DAY, "c", device_id="d9"), *history]
    assert user_features(scored(device_id="d9"), old)["fresh_user_device_new"] == 1


def test_foreign_country() -> None:
    history = [event(HOUR, "a", country="DE"), event(3 * DAY, "b", country="FR")]
    assert user_features(scored(country="NG"), history)["fresh_user_country_foreign"] == 1
    assert user_features(scored(country="FR"), history)["fresh_user_country_foreign"] == 0
    assert user_features(scored(country=None), history)["fresh_user_country_foreign"] == 1


def test_new_merchant() -> None:
    history = [event(HOUR, "a", merchant_id=10), event(6 * DAY, "b", merchant_id=11)]
    assert user_features(scored(merchant_id=12), history)["fresh_user_merchant_new"] == 1
    assert user_features(scored(merchant_id=11), history)["fresh_user_merchant_new"] == 0


def test_seconds_since_the_previous_transaction_and_its_7_day_cap() -> None:
    history = [event(3600 * US, "a"), event(90 * US, "b"), event(2 * DAY, "c")]
    assert user_features(scored(), history)["fresh_user_seconds_since_prev"] == 90.0
    # Exactly 7 days before is out of the window: as if there were none (the cap).
    edge = [event(7 * DAY, "a")]
    assert user_features(scored(), edge)["fresh_user_seconds_since_prev"] == SECONDS_SINCE_CAP
    inside = [event(7 * DAY - 1, "a")]
    gap = user_features(scored(), inside)["fresh_user_seconds_since_prev"]
    assert gap == pytest.approx(SECONDS_SINCE_CAP - 1e-6, abs=1e-9)
    assert gap < SECONDS_SINCE_CAP


def test_amount_over_the_users_median() -> None:
    history = [event(HOUR * i, str(i), amount=a) for i, a in enumerate((10.0, 30.0, 20.0), 1)]
    assert user_features(scored(amount=50.0), history)[
        "fresh_user_amount_to_median_7d"
    ] == pytest.approx(2.5)
    tiny = [event(HOUR, "a", amount=0.001)]
    assert user_features(scored(amount=1.0), tiny)[
        "fresh_user_amount_to_median_7d"
    ] == pytest.approx(1.0 / MEDIAN_FLOOR)


@pytest.mark.parametrize(
    ("name", "window"),
    [
        ("fresh_user_txn_count_10m", timedelta(minutes=10)),
        ("fresh_user_txn_count_1h", timedelta(hours=1)),
        ("fresh_user_txn_count_24h", timedelta(days=1)),
        ("fresh_user_txn_count_7d", timedelta(days=7)),
    ],
)
def test_a_velocity_window_is_half_open(name: str, window: timedelta) -> None:
    """An event exactly ``w`` before is out; one microsecond later it is in."""
    w = int(window.total_seconds() * US)
    assert user_features(scored(), [event(w, "a")])[name] == 0
    assert user_features(scored(), [event(w - 1, "a")])[name] == 1
    assert user_features(scored(), [event(w + 1, "a")])[name] == 0


def test_the_merchant_window_edge() -> None:
    txn = scored()
    at_edge = [event(HOUR, "a", user_id=2), event(HOUR - 1, "b", user_id=3)]
    values = fresh_features(txn, [], at_edge)
    assert values["fresh_merchant_txn_count_1h"] == 1
    # Merchant events never feed the user's features.
    assert values["fresh_user_txn_count_1h"] == 0


def test_an_event_at_the_same_time_counts_only_with_a_smaller_id() -> None:
    same_time = [event(0, "w"), event(0, "y")]  # "w" < "x" < "y"
    values = user_features(scored(), same_time)
    assert values["fresh_user_txn_count_10m"] == 1
    assert values["fresh_user_seconds_since_prev"] == 0.0


def test_later_events_and_the_scored_transaction_itself_never_count() -> None:
    txn = scored()
    later = [event(-1, "a"), event(-HOUR, "b")]
    assert user_features(txn, [txn, *later]) == user_features(txn, [])
    assert fresh_features(txn, [txn], [txn])["fresh_merchant_txn_count_1h"] == 0


def test_sums_and_distinct_counts() -> None:
    history = [
        event(5 * MINUTE, "a", amount=10.0, merchant_id=10, device_id="d1"),
        event(30 * MINUTE, "b", amount=15.5, merchant_id=11, device_id="d2"),
        event(2 * HOUR, "c", amount=100.0, merchant_id=12, device_id=None),
        event(20 * HOUR, "d", amount=7.25, merchant_id=10, device_id="d3"),
        event(2 * DAY, "e", amount=1000.0, merchant_id=13, device_id="d4"),
    ]
    values = user_features(scored(), history)
    assert values["fresh_user_txn_count_10m"] == 1
    assert values["fresh_user_txn_count_1h"] == 2
    assert values["fresh_user_txn_count_24h"] == 4
    assert values["fresh_user_amount_sum_1h"] == pytest.approx(25.5)
    assert values["fresh_user_amount_sum_24h"] == pytest.approx(132.75)
    assert values["fresh_user_distinct_merchants_1h"] == 2
    # Unknown devices are not a device.
    assert values["fresh_user_distinct_devices_24h"] == 3
    assert values["fresh_user_txn_count_7d"] == 5


def _history(seed: int) -> list[Event]:
    rng = random.Random(seed)
    return [
        event(
            rng.randrange(-DAY, 8 * DAY),
            f"t{i:03d}",
            merchant_id=rng.randrange(10, 14),
            amount=round(rng.uniform(1, 200), 2),
            device_id=rng.choice(["d1", "d2", "d3", None]),
            country=rng.choice(["DE", "FR", None]),
        )
        for i in range(60)
    ]


def test_out_of_order_input_gives_the_same_features() -> None:
    history = _history(3)
    txn = scored(merchant_id=11)
    expected = fresh_features(txn, sorted(history, key=lambda e: e.ts_us), history)
    shuffled = history[:]
    random.Random(4).shuffle(shuffled)
    assert fresh_features(txn, shuffled, list(reversed(history))) == expected
    assert expected["fresh_user_txn_count_7d"] > 0  # the history is not all out of range


def test_duplicates_of_one_id_count_once() -> None:
    history = _history(5)
    txn = scored()
    expected = fresh_features(txn, history, history)
    assert fresh_features(txn, history * 3, history + history[:10]) == expected
    once = user_features(scored(), [event(MINUTE, "a", amount=5.0)])
    twice = user_features(scored(), [event(MINUTE, "a", amount=5.0)] * 2)
    assert twice == once
    assert twice["fresh_user_amount_sum_1h"] == 5.0
