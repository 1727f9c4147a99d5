"""The fresh features of every transaction of a data interval, from the lake (offline).

For each transaction of the interval this computes :data:`FRESH_FEATURES` as of just
before it, with the one computation :func:`driftline.core.fresh.fresh_features` that the
scoring service calls on the online event state: the same function over the same events
gives the same values, so training learns exactly what serving will compute.

The job reads the validated raw transactions of the interval's days and of the
``FRESH_RETENTION`` (7) days before it, the longest window of any fresh feature. As for
the store features (:mod:`driftline.data.features`), days before ``data_start`` are
legitimately absent and any other missing day is an error that names the days, checked
by the same helpers before a file is read.

Each transaction is handed only its entities' events that can count: per user and per
merchant the events are sorted once, and a transaction at ``t`` gets the slice with
timestamps in ``(t - window, t]`` (a binary search); :func:`fresh_features` then keeps
the distinct events strictly before it. One row per transaction is written to
``features/fresh/dt=YYYY-MM-DD`` per day, replaced atomically and byte for byte
reproducibly (a rerun of a day rewrites the same file, never appends).

Before anything is written, every day passes the GX suite ``fresh_features``
(``great_expectations/expectations/fresh_features.json``), which :func:`fresh_suite`
derives from :data:`FRESH` and ``FRESH_SPEC`` (a unit test keeps the committed file equal
to it). A failing day is quarantined under ``quarantine/fresh/dt=D/`` with the failed
expectations, and no day of the interval is published.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from driftline.core import lake
from driftline.core.feature_spec import (
    FRESH_RETENTION,
    FRESH_SPEC,
    FRESH_WINDOWS,
    FreshFeature,
)
from driftline.core.fresh import Event, fresh_features
from driftline.core.interval import Interval
from driftline.core.schemas import TIMESTAMP, TRANSACTIONS
from driftline.core.settings import Settings, get_settings
from driftline.data import quarantine as quarantine_zone
from driftline.data.errors import BatchQuarantined, DataError
from driftline.data.events import events_of
from driftline.data.features import require_history
from driftline.data.validate import describe_failures, validate_frame

log = logging.getLogger(__name__)

ZONE = "features"
DATASET = "fresh"
#: The GX suite every fresh-feature day passes before it is published.
SUITE = "fresh_features"
_US = 1_000_000
_ARROW = {"int64": pa.int64(), "float64": pa.float64()}
#: Schema of a fresh-feature partition: keys and time, then ``FRESH_SPEC`` in order.
FRESH = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("merchant_id", pa.int64(), nullable=False),
        *(pa.field(f.name, _ARROW[f.dtype]) for f in FRESH_SPEC),
    ]
)


class MissingFreshFeaturesError(DataError):
    """Fresh-feature partitions a reader needs are missing.

    Attributes:
        missing: The missing days, oldest first.
    """

    def __init__(self, missing: list[date]) -> None:
        self.missing = sorted(missing)
        listed = ", ".join(day.isoformat() for day in self.missing)
        super().__init__(
            f"fresh features missing for {len(self.missing)} day(s): {listed}. Build them "
            "with the feature stage of those days (`driftline features`, the "
            "ingest_validate_materialize DAG or `dvc repro features`)."
        )


@dataclass(frozen=True)
class FreshResult:
    """Outcome of the fresh-feature job for one interval.

    Attributes:
        interval: The interval computed.
        rows: Rows written per day (ISO date -> count).
        history_events: Transactions read (the interval and its look-back).
        partitions: URIs of the partitions written.
    """

    interval: str
    rows: dict[str, int]
    history_events: int
    partitions: tuple[str, ...]


class _Timeline:
    """The events of one entity kind (user or merchant), sorted once per entity."""

    def __init__(self, events: Iterable[Event], key: str, window: timedelta) -> None:
        grouped: dict[int, list[Event]] = defaultdict(list)
        for event in events:
            grouped[getattr(event, key)].append(event)
        self._events = {
            entity: sorted(items, key=lambda e: (e.ts_us, e.transaction_id))
            for entity, items in grouped.items()
        }
        self._ts = {entity: [e.ts_us for e in items] for entity, items in self._events.items()}
        self._key = key
        self._window_us = int(window.total_seconds() * _US)

    def around(self, txn: Event) -> Sequence[Event]:
        """The entity's events with timestamps in ``(t - window, t]`` (``txn`` included)."""
        entity = getattr(txn, self._key)
        stamps = self._ts.get(entity, [])
        low = bisect_right(stamps, txn.ts_us - self._window_us)
        high = bisect_right(stamps, txn.ts_us)
        return self._events.get(entity, [])[low:high]


def compute_fresh(history: Sequence[Event], scored: Sequence[Event]) -> pa.Table:
    """The fresh features of each of ``scored`` from the events ``history``.

    Args:
        history: Every event that may count (the scored ones and their look-back).
        scored: The transactions to compute rows for.

    Returns:
        One row per scored transaction with the columns of :data:`FRESH`, sorted by
        time then transaction id.
    """
    users = _Timeline(history, "user_id", FRESH_WINDOWS["user"])
    merchants = _Timeline(history, "merchant_id", FRESH_WINDOWS["merchant"])
    ordered = sorted(scored, key=lambda e: (e.ts_us, e.transaction_id))
    values = [fresh_features(txn, users.around(txn), merchants.around(txn)) for txn in ordered]
    columns: dict[str, pa.Array] = {
        "transaction_id": pa.array([e.transaction_id for e in ordered], pa.string()),
        "event_timestamp": pa.array([e.ts_us for e in ordered], pa.int64()).cast(TIMESTAMP),
        "user_id": pa.array([e.user_id for e in ordered], pa.int64()),
        "merchant_id": pa.array([e.merchant_id for e in ordered], pa.int64()),
    }
    for feature in FRESH_SPEC:
        raw = [row[feature.name] for row in values]
        cast = [int(v) for v in raw] if feature.dtype == "int64" else raw
        columns[feature.name] = pa.array(cast, _ARROW[feature.dtype])
    return pa.table(columns, schema=FRESH)


def _day_of(table: pa.Table, day: date) -> pa.Table:
    """The rows of ``table`` whose ``event_timestamp`` falls on ``day``."""
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    column = table["event_timestamp"]
    return table.filter(
        pc.and_(
            pc.greater_equal(column, pa.scalar(start, TIMESTAMP)),
            pc.less(column, pa.scalar(start + timedelta(days=1), TIMESTAMP)),
        )
    )


def _inside(events: Sequence[Event], interval: Interval) -> list[Event]:
    """The events with timestamps in ``interval``."""
    start, end = (int(edge.timestamp()) * _US for edge in (interval.start, interval.end))
    return [e for e in events if start <= e.ts_us < end]


def build_fresh_features(interval: Interval, settings: Settings | None = None) -> FreshResult:
    """Compute and publish the fresh features of every transaction of ``interval``.

    Raises:
        driftline.data.features.MissingHistoryError: A raw transactions partition of the
            interval or of its ``FRESH_RETENTION`` look-back (from ``data_start`` on) is
            missing; nothing is written.
        BatchQuarantined: A day failed the ``fresh_features`` suite (see
            :func:`publish_fresh`); nothing is written.
    """
    cfg = settings or get_settings()
    tables, events = validated_fresh(interval, cfg)
    return write_fresh(interval, tables, events, cfg)


def validated_fresh(interval: Interval, settings: Settings) -> tuple[dict[date, pa.Table], int]:
    """:func:`compute_fresh_interval`, then every day through the suite; nothing published.

    The feature stage calls this before it publishes the store features, so a day that
    fails here leaves the store features as they were too.

    Raises:
        driftline.data.features.MissingHistoryError: As :func:`build_fresh_features`.
        BatchQuarantined: As :func:`publish_fresh`.
    """
    tables, events = compute_fresh_interval(interval, settings)
    for day, table in tables.items():
        _require_valid(day, table, settings)
    return tables, events


def write_fresh(
    interval: Interval, tables: Mapping[date, pa.Table], events: int, settings: Settings
) -> FreshResult:
    """Publish validated tables (from :func:`validated_fresh`); what was written."""
    partitions = _write_partitions(tables, settings)
    rows = {day.isoformat(): table.num_rows for day, table in tables.items()}
    log.info("fresh features %s: %s rows from %d events", interval, rows, events)
    return FreshResult(str(interval), rows, events, partitions)


def compute_fresh_interval(
    interval: Interval, settings: Settings
) -> tuple[dict[date, pa.Table], int]:
    """Compute (but do not publish) the fresh features of ``interval``, per day.

    Returns:
        One table (schema :data:`FRESH`) per day of ``interval``, and the number of
        transactions read (the interval and its look-back).

    Raises:
        driftline.data.features.MissingHistoryError: As :func:`build_fresh_features`.
    """
    days = require_history(interval, settings, FRESH_RETENTION, ("transactions",))
    raw = lake.read_partitions(settings.lake_uri, "raw", "transactions", days, TRANSACTIONS)
    history = events_of(raw)
    computed = compute_fresh(history, _inside(history, interval))
    return {day: _day_of(computed, day) for day in interval.days()}, len(history)


def publish_fresh(tables: Mapping[date, pa.Table], settings: Settings) -> tuple[str, ...]:
    """Validate every day's fresh-feature table, then publish them all.

    Args:
        tables: One table (schema :data:`FRESH`) per day.
        settings: Lake and GX locations.

    Returns:
        The URIs of the partitions written, in the order of ``tables``.

    Raises:
        BatchQuarantined: A day failed the :data:`SUITE` suite: it is quarantined under
            ``quarantine/fresh/dt=D/`` (the rows, the validation result, the reason
            naming each failed expectation and column) and no day is published.
    """
    for day, table in tables.items():
        _require_valid(day, table, settings)
    return _write_partitions(tables, settings)


def _write_partitions(tables: Mapping[date, pa.Table], settings: Settings) -> tuple[str, ...]:
    """Replace each day's fresh-feature partition; the URIs, in the order of ``tables``."""
    return tuple(
        lake.replace_partition(settings.lake_uri, ZONE, DATASET, day, table)
        for day, table in tables.items()
    )


def _require_valid(day: date, table: pa.Table, settings: Settings) -> None:
    """Quarantine ``table`` and raise unless it passes :data:`SUITE` for ``day``."""
    outcome = validate_frame(table, SUITE, Interval.for_day(day), settings)
    if outcome.success:
        return
    reason = describe_failures(outcome)
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    where = quarantine_zone.put_entry(
        settings.lake_uri,
        DATASET,
        day,
        {f"{DATASET}.parquet": sink.getvalue().to_pybytes()},
        reason,
        outcome.result,
    )
    raise BatchQuarantined(f"fresh features for {day} failed validation: {reason}", where)


# ------------------------------------------------------------------------------ GX suite

#: The GX (pandas) type each spec dtype must have: exact, so a count that became a float
#: (or a string) fails, and an int64 column is integral by construction.
_GX_TYPES = {"int64": "int64", "float64": "float64"}


def _expect(kind: str, **kwargs: Any) -> dict[str, Any]:
    """One expectation of a GX 1.x suite file."""
    return {"type": kind, "kwargs": kwargs, "meta": {}}


def _is_flag(feature: FreshFeature) -> bool:
    """An integer feature whose domain is exactly 0 and 1."""
    return feature.dtype == "int64" and (feature.minimum, feature.maximum) == (0, 1)


def _domain(feature: FreshFeature) -> list[dict[str, Any]]:
    """The set (flags) or range check of ``feature``: exactly its spec bounds."""
    name = feature.name
    if _is_flag(feature):
        return [_expect("expect_column_values_to_be_in_set", column=name, value_set=[0, 1])]
    bounds = {"min_value": feature.minimum, "max_value": feature.maximum}
    bounds = {key: value for key, value in bounds.items() if value is not None}
    if not bounds:
        return []
    return [_expect("expect_column_values_to_be_between", column=name, **bounds)]


def _measure(feature: FreshFeature) -> str:
    """``feature``'s name without its window suffix (``fresh_user_txn_count``)."""
    head, _, suffix = feature.name.rpartition("_")
    return head if suffix[:-1].isdigit() and suffix[-1] in "mhd" else feature.name


def _monotone_pairs() -> list[dict[str, Any]]:
    """A count or sum over a longer window is never below the same one over a shorter.

    Features sharing a measure (:func:`_measure`) of one entity differ only by window;
    every event inside the shorter window is inside the longer one, and the values
    (counts, sums of positive amounts) only grow with more events.
    """
    groups: dict[tuple[str, str], list[FreshFeature]] = defaultdict(list)
    for feature in FRESH_SPEC:
        groups[(feature.entity, _measure(feature))].append(feature)
    checks: list[dict[str, Any]] = []
    for group in groups.values():
        ordered = sorted(group, key=lambda f: f.window)
        for shorter, longer in pairwise(ordered):
            checks.append(
                _expect(
                    "expect_column_pair_values_a_to_be_greater_than_b",
                    column_A=longer.name,
                    column_B=shorter.name,
                    or_equal=True,
                )
            )
    return checks


def fresh_suite() -> dict[str, Any]:
    """The GX suite :data:`SUITE`, derived from :data:`FRESH` and ``FRESH_SPEC``.

    Exactly the partition's columns; keys and time typed and not null; one row per
    transaction id; every row's time inside the day (suite parameters); each feature of
    its spec dtype (so counts are integral), not null (a first transaction has values
    too: ``fresh_user_seconds_since_prev`` is the 7-day window when there is no earlier
    one), inside its spec bounds (flags in {0, 1}); counts and sums growing with the
    window. The committed ``great_expectations/expectations/fresh_features.json`` is this
    dict as JSON (``tests/unit/test_fresh_suite.py``).
    """
    features = [f.name for f in FRESH_SPEC]
    expectations = [
        _expect("expect_table_columns_to_match_set", column_set=FRESH.names, exact_match=True),
        _expect("expect_column_values_to_be_of_type", column="user_id", type_="int64"),
        _expect("expect_column_values_to_be_of_type", column="merchant_id", type_="int64"),
        _expect("expect_column_values_to_be_of_type", column="event_timestamp", type_="Timestamp"),
        *(
            _expect("expect_column_values_to_be_of_type", column=f.name, type_=_GX_TYPES[f.dtype])
            for f in FRESH_SPEC
        ),
        *(_expect("expect_column_values_to_not_be_null", column=name) for name in FRESH.names),
        _expect("expect_column_values_to_be_unique", column="transaction_id"),
        _expect(
            "expect_column_values_to_be_between",
            column="event_timestamp",
            min_value={"$PARAMETER": "interval_start"},
            max_value={"$PARAMETER": "interval_end"},
            strict_max=True,
        ),
        *(check for f in FRESH_SPEC for check in _domain(f)),
        *_monotone_pairs(),
    ]
    return {
        "name": SUITE,
        "notes": (
            "Fresh features of one day's transactions (driftline.data.fresh), as of just "
            f"before each: {', '.join(features)}. Generated from "
            "driftline.core.feature_spec.FRESH_SPEC by driftline.data.fresh.fresh_suite; "
            "edit the spec, not this file."
        ),
        "meta": {"owner": "driftline"},
        "expectations": expectations,
    }


def missing_fresh_days(settings: Settings, days: Iterable[date]) -> list[date]:
    """The days among ``days`` without a fresh-feature partition, oldest first."""
    return [
        day
        for day in sorted(days)
        if not lake.exists(lake.partition_file(settings.lake_uri, ZONE, DATASET, day))
    ]


def read_fresh_features(settings: Settings, days: Iterable[date]) -> pa.Table:
    """The fresh-feature rows of ``days`` (schema :data:`FRESH`).

    Raises:
        MissingFreshFeaturesError: A day has no fresh-feature partition.
    """
    wanted = sorted(set(days))
    missing = missing_fresh_days(settings, wanted)
    if missing:
        raise MissingFreshFeaturesError(missing)
    return lake.read_partitions(settings.lake_uri, ZONE, DATASET, wanted, FRESH)


def fresh_files(settings: Settings, days: Iterable[date]) -> list[str]:
    """URIs of the existing fresh-feature partition files among ``days``, oldest first."""
    return lake.existing_partition_files(settings.lake_uri, ZONE, DATASET, days)
