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

import functools
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import median

from driftline.core.feature_spec import FRESH_SPEC, SECONDS_SINCE_CAP, FreshFeature

_US = 1_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
#: Floor of the user's median amount in ``fresh_user_amount_to_median_7d``.
MEDIAN_FLOOR = 0.01


def epoch_micros(ts: datetime) -> int:
    """An aware time as exact microseconds since the Unix epoch (UTC): ``Event.ts_us``."""
    return (ts - _EPOCH) // _MICROSECOND


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
    """The distinct events earlier than ``txn`` and inside ``(t - window, t)``.

    The first event of each transaction id is kept (a replayed id counts once).
    """
    start, ts_us, transaction_id = txn.ts_us - window_us, txn.ts_us, txn.transaction_id
    seen: dict[str, Event] = {}
    for event in events:
        at = event.ts_us
        # Event.before, inlined (this loop runs for every stored event of every row).
        if start < at and (at < ts_us or (at == ts_us and event.transaction_id < transaction_id)):
            seen.setdefault(event.transaction_id, event)
    return list(seen.values())


def _window_us(feature: FreshFeature) -> int:
    return int(feature.window.total_seconds() * _US)


#: A feature's value from the scored transaction and the entity's distinct events
#: earlier than it and inside the feature's window.
Compute = Callable[[Event, list[Event]], float]


def _amount_sum(txn: Event, inside: list[Event]) -> float:
    return math.fsum(e.amount for e in inside)


def _distinct_merchants(txn: Event, inside: list[Event]) -> float:
    return float(len({e.merchant_id for e in inside}))


def _distinct_devices(txn: Event, inside: list[Event]) -> float:
    return float(len({e.device_id for e in inside if e.device_id is not None}))


def _count(txn: Event, inside: list[Event]) -> float:
    return float(len(inside))


def _device_new(txn: Event, inside: list[Event]) -> float:
    if not inside:
        return 0.0
    return float(txn.device_id is None or txn.device_id not in {e.device_id for e in inside})


def _country_foreign(txn: Event, inside: list[Event]) -> float:
    return float(bool(inside) and txn.country not in {e.country for e in inside})


def _merchant_new(txn: Event, inside: list[Event]) -> float:
    return float(bool(inside) and txn.merchant_id not in {e.merchant_id for e in inside})


def _amount_to_median(txn: Event, inside: list[Event]) -> float:
    if not inside:
        return 1.0
    return txn.amount / max(median(e.amount for e in inside), MEDIAN_FLOOR)


def _seconds_since_prev(txn: Event, inside: list[Event]) -> float:
    if not inside:
        return SECONDS_SINCE_CAP
    return min((txn.ts_us - max(e.ts_us for e in inside)) / _US, SECONDS_SINCE_CAP)


def _velocity(feature: FreshFeature) -> Compute:
    """The aggregate that a velocity feature's name asks for."""
    name = feature.name
    if "_amount_sum_" in name:
        return _amount_sum
    if "_distinct_merchants_" in name:
        return _distinct_merchants
    if "_distinct_devices_" in name:
        return _distinct_devices
    if "_txn_count_" in name:
        return _count
    raise ValueError(f"no velocity rule for {name}")


#: Request-time rules by the end of the feature's name, tried in this order.
_REQUEST_RULES: tuple[tuple[str, Compute], ...] = (
    ("_txn_count_7d", _count),
    ("_device_new", _device_new),
    ("_country_foreign", _country_foreign),
    ("_merchant_new", _merchant_new),
    ("_amount_to_median_7d", _amount_to_median),
    ("_seconds_since_prev", _seconds_since_prev),
)


def _request(feature: FreshFeature) -> Compute:
    """The comparison of the request with the user's profile that the name asks for."""
    for suffix, compute in _REQUEST_RULES:
        if feature.name.endswith(suffix):
            return compute
    raise ValueError(f"no request-time rule for {feature.name}")


@dataclass(frozen=True, slots=True)
class _Rule:
    """How one feature of ``FRESH_SPEC`` is computed."""

    name: str
    entity: str
    window_us: int
    compute: Compute


@functools.cache
def _rules() -> tuple[_Rule, ...]:
    """The rule of every feature of ``FRESH_SPEC``, in declaration order (built once)."""
    return tuple(
        _Rule(
            feature.name,
            feature.entity,
            _window_us(feature),
            (_velocity if feature.kind == "velocity" else _request)(feature),
        )
        for feature in FRESH_SPEC
    )


def fresh_features(
    txn: Event, user_events: Iterable[Event], merchant_events: Iterable[Event]
) -> dict[str, float]:
    """Every fresh feature of ``txn`` from its user's and merchant's stored events.

    The entity's earlier, distinct events are found once per entity and cut once per
    window; each feature then reads the events of its window.

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
    windows: dict[tuple[str, int], list[Event]] = {}
    values: dict[str, float] = {}
    for rule in _rules():
        inside = windows.get((rule.entity, rule.window_us))
        if inside is None:
            start = txn.ts_us - rule.window_us
            inside = [e for e in history[rule.entity] if e.ts_us > start]
            windows[(rule.entity, rule.window_us)] = inside
        values[rule.name] = rule.compute(txn, inside)
    return values


@functools.cache
def _window_us_of(entity: str) -> int:
    """The longest window of ``entity``'s fresh features, in microseconds."""
    return max(_window_us(f) for f in FRESH_SPEC if f.entity == entity)
