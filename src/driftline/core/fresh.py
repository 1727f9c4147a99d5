"""The one computation of the fresh features (``FRESH_SPEC``), online and offline.

A fresh feature describes a transaction's own moment: the user's (and merchant's)
transactions *just before it*, and the request compared with the user's recent profile.
The scoring service computes them from the event state (``driftline.data.events``) at
request time; the offline job (``driftline.data.fresh``) computes them for every
transaction in the lake for training and for the online/offline consistency check. Both
call :func:`fresh_features` with the transaction and its entities' stored events, so the
two can only differ when the state held different events (an earlier transaction that
arrived after this one was scored), never by definition.

The function is pure: it takes the entity's events in any order, including later events,
duplicates of one transaction id and the scored transaction itself, and keeps only the
distinct events earlier than the scored one (see ``FreshFeature``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from statistics import median

from driftline.core.feature_spec import FRESH_SPEC, SECONDS_SINCE_CAP, FreshFeature

_US = 1_000_000
#: Floor of the user's median amount in ``fresh_user_amount_to_median_7d``.
MEDIAN_FLOOR = 0.01


@dataclass(frozen=True, slots=True)
class Event:
    """What the event state keeps of one transaction.

    Attributes:
        ts_us: Transaction time, microseconds since the Unix epoch (UTC).
        transaction_id: Unique id; the same id counts once.
        user_id: The paying user.
        merchant_id: The merchant paid.
        amount: Amount in the transaction's currency.
        device_id: Device used, ``None`` when unknown.
        country: Merchant country, ``None`` when unknown.
    """

    ts_us: int
    transaction_id: str
    user_id: int
    merchant_id: int
    amount: float
    device_id: str | None
    country: str | None

    def before(self, other: Event) -> bool:
        """Whether this event is earlier than ``other`` in the total order of events."""
        return (self.ts_us, self.transaction_id) < (other.ts_us, other.transaction_id)


def earlier_events(txn: Event, events: Iterable[Event], window_us: int) -> list[Event]:
    """The distinct events earlier than ``txn`` and inside ``(t - window, t)``."""
    start = txn.ts_us - window_us
    seen: dict[str, Event] = {}
    for event in events:
        if event.ts_us > start and event.before(txn) and event.transaction_id not in seen:
            seen[event.transaction_id] = event
    return list(seen.values())


def _window_us(feature: FreshFeature) -> int:
    return int(feature.window.total_seconds() * _US)


def _velocity(feature: FreshFeature, txn: Event, events: list[Event]) -> float:
    """An aggregate of ``events`` (already the entity's earlier, distinct ones)."""
    inside = [e for e in events if e.ts_us > txn.ts_us - _window_us(feature)]
    name = feature.name
    if "_amount_sum_" in name:
        return math.fsum(e.amount for e in inside)
    if "_distinct_merchants_" in name:
        return float(len({e.merchant_id for e in inside}))
    if "_distinct_devices_" in name:
        return float(len({e.device_id for e in inside if e.device_id is not None}))
    if "_txn_count_" in name:
        return float(len(inside))
    raise ValueError(f"no velocity rule for {name}")


def _request(feature: FreshFeature, txn: Event, events: list[Event]) -> float:
    """The request compared with the user's profile ``events`` (earlier, distinct)."""
    inside = [e for e in events if e.ts_us > txn.ts_us - _window_us(feature)]
    name = feature.name
    if name.endswith("_txn_count_7d"):
        return float(len(inside))
    if name.endswith("_device_new"):
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
        return min((txn.ts_us - max(e.ts_us for e in inside)) / _US, SECONDS_SINCE_CAP)
    raise ValueError(f"no request-time rule for {name}")


def fresh_features(
    txn: Event, user_events: Iterable[Event], merchant_events: Iterable[Event]
) -> dict[str, float]:
    """Every fresh feature of ``txn`` from its user's and merchant's stored events.

    Args:
        txn: The scored transaction.
        user_events: Events of ``txn.user_id`` (any order; later ones, duplicates and
            ``txn`` itself are ignored).
        merchant_events: Events of ``txn.merchant_id``, likewise.

    Returns:
        ``{name: value}`` for every feature of ``FRESH_SPEC``, in declaration order.
    """
    history = {
        "user": earlier_events(txn, user_events, _window_us_of("user")),
        "merchant": earlier_events(txn, merchant_events, _window_us_of("merchant")),
    }
    values: dict[str, float] = {}
    for feature in FRESH_SPEC:
        rule = _velocity if feature.kind == "velocity" else _request
        values[feature.name] = rule(feature, txn, history[feature.entity])
    return values


def _window_us_of(entity: str) -> int:
    """The longest window of ``entity``'s fresh features, in microseconds."""
    return max(_window_us(f) for f in FRESH_SPEC if f.entity == entity)
