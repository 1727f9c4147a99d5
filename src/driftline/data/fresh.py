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
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc

from driftline.core import lake
from driftline.core.feature_spec import FRESH_RETENTION, FRESH_SPEC, FRESH_WINDOWS
from driftline.core.fresh import Event, fresh_features
from driftline.core.interval import Interval
from driftline.core.schemas import TIMESTAMP, TRANSACTIONS
from driftline.core.settings import Settings, get_settings
from driftline.data.errors import DataError
from driftline.data.events import events_of
from driftline.data.features import require_history

log = logging.getLogger(__name__)

ZONE = "features"
DATASET = "fresh"
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
    """
    cfg = settings or get_settings()
    days = require_history(interval, cfg, FRESH_RETENTION, ("transactions",))
    raw = lake.read_partitions(cfg.lake_uri, "raw", "transactions", days, TRANSACTIONS)
    history = events_of(raw)
    computed = compute_fresh(history, _inside(history, interval))
    tables = {day: _day_of(computed, day) for day in interval.days()}
    partitions = tuple(
        lake.replace_partition(cfg.lake_uri, ZONE, DATASET, day, table)
        for day, table in tables.items()
    )
    rows = {day.isoformat(): table.num_rows for day, table in tables.items()}
    log.info("fresh features %s: %s rows from %d events", interval, rows, len(history))
    return FreshResult(str(interval), rows, len(history), partitions)


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
