"""Online features for scoring: coalesced store reads behind a timeout, a breaker and a cache.

:class:`FeatureSource` is what the scorer needs from a feature store: the
``STORE_NUMERIC`` values of each (user, merchant) pair. :class:`FeastFeatureSource`
reads them from the Feast online store (feature service ``fraud_v1``).
:class:`GuardedFeatures` wraps any source in the serving guard
(:class:`~driftline.serving.guard.CoalescingGuard`, shared with the event store's
:class:`~driftline.serving.fresh.GuardedEvents`), so that a failing or slow store
degrades scores instead of failing requests, and so that load alone never does:
concurrent lookups are coalesced into one ``fetch`` of their distinct entity pairs (64
concurrent single-row requests make a handful of store reads, not 64), the call is timed
from its start with an allowance per further pair, a call slowed by a stalled, saturated
or CPU-starved process gets further periods (at most :data:`MAX_EXTENSIONS`), and
consecutive failed calls open a :class:`CircuitBreaker`. While the store cannot answer,
each entity gets its last known features (an in-memory LRU of recent successful
lookups, :class:`LastKnown`) or missing values, which the model's preprocessor handles.
Opening, half-opening and closing the breaker are logged with the reason.
"""

from __future__ import annotations

import functools
import logging
import math
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from driftline.core.columns import STORE_NUMERIC
from driftline.core.feature_spec import JOIN_KEYS, MERCHANT_FEATURES, USER_FEATURES
from driftline.core.settings import Settings

# The guard's rules and buckets are also read from here (metrics, tests, the bench).
from driftline.serving.guard import MAX_EXTENSIONS as MAX_EXTENSIONS
from driftline.serving.guard import READ_BUCKETS as READ_BUCKETS
from driftline.serving.guard import SATURATED_SHARE as SATURATED_SHARE
from driftline.serving.guard import (
    CoalescingGuard,
    GuardNames,
    GuardStats,
    ThreadClock,
    thread_times,
)

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore, FeatureView

log = logging.getLogger(__name__)

#: An entity pair to look up: ``(user_id, merchant_id)``.
EntityKey = tuple[int, int]
#: ``STORE_NUMERIC`` name -> value (NaN where missing).
FeatureRow = dict[str, float]
BreakerState = Literal["closed", "open", "half_open"]
#: Gauge value of each breaker state.
BREAKER_STATE_VALUE: dict[BreakerState, int] = {"closed": 0, "open": 1, "half_open": 2}


class FeatureSource(Protocol):
    """Anything that returns online features per (user_id, merchant_id)."""

    def fetch(self, entities: Sequence[EntityKey]) -> list[FeatureRow]:
        """One row of ``STORE_NUMERIC`` values per entity pair, in order (NaN if none)."""
        ...


def missing_row() -> FeatureRow:
    """A row where every store feature is missing."""
    return dict.fromkeys(STORE_NUMERIC, math.nan)


def _number(value: Any) -> float:
    """A feature value as float, ``None`` (no value in the store) as NaN."""
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class _ViewRead:
    """One feature view of the feature service, as the direct online read needs it."""

    #: The registry's feature view (the online store's table).
    view: FeatureView
    #: The service's features of the view, in the view's order.
    features: list[str]
    #: The view's join key (``user_id`` or ``merchant_id``).
    join_key: str
    #: Which side of an :data:`EntityKey` the key is: 0 (user) or 1 (merchant).
    side: int


def _proto_number(value: Any) -> float:
    """A Feast ``ValueProto`` scalar as float; unset (no stored value) as NaN."""
    kind = value.WhichOneof("val")
    return math.nan if kind is None or kind == "null_val" else float(getattr(value, kind))


#: Wire tags of the two scalar kinds the online store holds for ``STORE_NUMERIC``:
#: ``double_val`` (field 5, 64-bit) and ``int64_val`` (field 4, varint).
_DOUBLE_TAG, _INT64_TAG = 0x29, 0x20
_DOUBLE = struct.Struct("<d")


def _stored_number(raw: bytes) -> float:
    """A serialised ``ValueProto`` scalar as float, like ``_proto_number`` of its parse.

    A stored value is one field: a double is its tag and 8 little-endian bytes, an int64
    its tag and a varint (two's complement in 64 bits). Those two are decoded straight
    from the bytes (parsing a proto object per value was most of the online read); any
    other encoding goes through ``ValueProto`` itself.
    """
    if len(raw) == 9 and raw[0] == _DOUBLE_TAG:
        return float(_DOUBLE.unpack_from(raw, 1)[0])
    if 2 <= len(raw) <= 11 and raw[0] == _INT64_TAG:
        value, shift = 0, 0
        for position in range(1, len(raw)):
            byte = raw[position]
            value |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                if position == len(raw) - 1:  # the varint ends the value: nothing else
                    return float(value - (1 << 64) if value >= 1 << 63 else value)
                break
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    return _proto_number(ValueProto.FromString(raw))


class FeastFeatureSource:
    """Feast online store, built once per process from settings (lazily, on first use).

    :meth:`fetch` reads each feature view of the ``fraud_v1`` service through Feast's
    provider (``online_read``: the online store's own read, entity keys serialised by
    Feast), once per view per call, and takes the values off the protos it returns.
    That is exactly what ``get_online_features`` reads, without its per-call work
    around the read: resolving the service in the registry, converting the entity rows
    to protos column by column, building the response protos and turning them into
    Python lists (measured: 5.6 ms -> 2.6 ms for 64 pairs on the 2-core machine).
    Feast 0.67 applies no TTL on this online path either (``get_online_features``
    returns an expired row's values with status ``PRESENT``; only its opt-in
    ``precompute_online`` path marks them): ``tests/integration/test_online_read.py``
    checks both paths give the same rows, missing and expired entities included.
    :meth:`fetch_via_get_online_features` is the reference path.

    The feature views are resolved once, when the store is opened: a ``feast apply``
    that changes them needs a restart of the service (as a model change does).
    """

    def __init__(self, settings: Settings) -> None:
        """Remember the settings; nothing is opened until the first lookup."""
        self._settings = settings
        self._lock = threading.Lock()
        self._store: tuple[FeatureStore, FeatureService, list[_ViewRead]] | None = None

    def _open(self) -> tuple[FeatureStore, FeatureService, list[_ViewRead]]:
        """The store, the feature service and its views; a failure is retried next time."""
        with self._lock:
            if self._store is None:
                from driftline.data.feast import FEATURE_SERVICE, get_store

                store = get_store(self._settings)
                service = store.get_feature_service(FEATURE_SERVICE)
                self._store = (store, service, _view_reads(store, service))
            return self._store

    def warm_up(self) -> None:
        """Open the store and read once, so the first request does not pay for it.

        Opening Feast (registry, online-store connection) takes far longer than the
        lookup timeout; without this the first requests time out, open the breaker and
        are answered with fallback features.
        """
        self.fetch([(0, 0)])

    def fetch(self, entities: Sequence[EntityKey]) -> list[FeatureRow]:
        """The ``fraud_v1`` features of the entity pairs: one ``online_read`` per view."""
        from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
        from feast.protos.feast.types.Value_pb2 import Value as ValueProto

        if not entities:
            return []
        store, _, reads = self._open()
        provider = store._get_provider()  # Feast's extension point for online stores
        sqlite = _sqlite_online_store(provider)
        rows: list[FeatureRow] = [{} for _ in entities]
        for read in reads:
            ids = list(dict.fromkeys(pair[read.side] for pair in entities))
            if sqlite is not None:
                stored = _sqlite_read(store, sqlite, read, ids)
            else:
                keys = [
                    EntityKeyProto(
                        join_keys=[read.join_key], entity_values=[ValueProto(int64_val=i)]
                    )
                    for i in ids
                ]
                online = provider.online_read(store.config, read.view, keys, read.features)
                stored = [
                    None if found is None else {k: _proto_number(v) for k, v in found.items()}
                    for _, found in online
                ]
            if len(stored) != len(ids):
                raise ValueError(f"{read.view.name}: {len(stored)} rows for {len(ids)} keys")
            values: dict[int, FeatureRow] = {}
            for key, found in zip(ids, stored, strict=True):
                data = found or {}
                values[key] = {name: data.get(name, math.nan) for name in read.features}
            for row, pair in zip(rows, entities, strict=True):
                row.update(values[pair[read.side]])
        return [{name: row[name] for name in STORE_NUMERIC} for row in rows]

    def fetch_via_get_online_features(self, entities: Sequence[EntityKey]) -> list[FeatureRow]:
        """The same rows through ``FeatureStore.get_online_features`` (the reference)."""
        store, service, _ = self._open()
        rows = [{"user_id": user, "merchant_id": merchant} for user, merchant in entities]
        found = store.get_online_features(features=service, entity_rows=rows).to_dict()
        return [{name: _number(found[name][i]) for name in STORE_NUMERIC} for i in range(len(rows))]


def _sqlite_online_store(provider: Any) -> Any | None:
    """The provider's online store when it is Feast's SQLite store, else ``None``."""
    from feast.infra.online_stores.sqlite import SqliteOnlineStore

    online_store = getattr(provider, "online_store", None)
    return online_store if isinstance(online_store, SqliteOnlineStore) else None


@functools.lru_cache(maxsize=1 << 16)
def _entity_key_bytes(join_key: str, value: int, version: int) -> bytes:
    """Feast's serialised entity key of ``join_key = value`` (a pure function of them)."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey as EntityKeyProto
    from feast.protos.feast.types.Value_pb2 import Value as ValueProto

    key = EntityKeyProto(join_keys=[join_key], entity_values=[ValueProto(int64_val=value)])
    return serialize_entity_key(key, entity_key_serialization_version=version)


def _sqlite_read(
    store: FeatureStore, online_store: Any, read: _ViewRead, ids: Sequence[int]
) -> list[dict[str, float] | None]:
    """What Feast's ``SqliteOnlineStore.online_read`` finds for ``ids``, with less work.

    The same query on Feast's own connection and table (each entity key's stored value
    protos) without the row timestamps (Feast turns every row's ``event_ts`` into a
    datetime, which this read never uses), parsing only the service's features of the
    view: per id a dict of feature values (:func:`_stored_number`), ``None`` for an
    entity without rows. The serialised keys are memoised (a pure function of the id),
    never the values.
    ``tests/integration/test_online_read.py`` checks it against ``get_online_features``.
    """
    from feast.infra.online_stores.helpers import compute_table_id

    config = store.config
    versioned = getattr(config.registry, "enable_online_feature_view_versioning", False)
    table = compute_table_id(config.project, read.view, versioned).replace('"', '""')
    version = config.entity_key_serialization_version
    keys = [_entity_key_bytes(read.join_key, i, version) for i in ids]
    wanted = set(read.features)
    found: dict[bytes, dict[str, float]] = {}
    query = (
        f'SELECT entity_key, feature_name, value FROM "{table}" '
        f"WHERE entity_key IN ({','.join('?' * len(keys))})"
    )
    for key, name, value in online_store._get_conn(config).execute(query, keys):
        values = found.setdefault(key, {})
        if name in wanted:
            values[name] = _stored_number(value)
    return [found.get(key) for key in keys]


def _view_reads(store: FeatureStore, service: FeatureService) -> list[_ViewRead]:
    """The service's feature views with their features, join key and entity side.

    Raises:
        ValueError: When the service does not cover ``STORE_NUMERIC`` exactly, or a
            view is not keyed by one of the two entities.
    """
    sides = {JOIN_KEYS["user"]: 0, JOIN_KEYS["merchant"]: 1}
    reads = []
    for projection in service.feature_view_projections:
        view = store.get_feature_view(projection.name)
        keys = [column.name for column in view.entity_columns]
        if len(keys) != 1 or keys[0] not in sides or projection.join_key_map:
            raise ValueError(f"feature view {view.name} is keyed by {keys}, not one entity")
        features = [feature.name for feature in projection.features]
        reads.append(_ViewRead(view, features, keys[0], sides[keys[0]]))
    served = sorted(name for read in reads for name in read.features)
    if served != sorted(STORE_NUMERIC):
        raise ValueError(f"feature service {service.name} serves {served}, not STORE_NUMERIC")
    return reads


class CircuitBreaker:
    """Consecutive-failure breaker: closed -> open (for ``reset_seconds``) -> half-open.

    Half-open lets exactly one trial call through; its success closes the breaker, its
    failure opens it again. Every transition is logged with its reason, and
    :attr:`state` is the state as of now (an open breaker whose reset period has passed
    reads half-open even when no call has come since). ``clock`` is injectable so tests
    need not sleep.
    """

    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
        name: str = "feature store",
    ) -> None:
        """Start closed; ``name`` (the store it guards) starts each logged transition."""
        self.name = name
        self._threshold = failures
        self._reset = reset_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at = 0.0
        self._state: BreakerState = "closed"
        self._trial_running = False

    @property
    def state(self) -> BreakerState:
        """The current state, with an expired open period already turned half-open."""
        with self._lock:
            self._expire()
            return self._state

    def _expire(self) -> None:
        """Turn ``open`` into ``half_open`` once the reset period is over (lock held)."""
        if self._state == "open" and self._clock() - self._opened_at >= self._reset:
            self._state, self._trial_running = "half_open", False
            log.info(
                "%s breaker half-open after %.1f s: the next call is a trial",
                self.name,
                self._reset,
            )

    def allow(self) -> bool:
        """Whether a call may go to the store now (half-open: only the one trial)."""
        with self._lock:
            self._expire()
            if self._state == "closed":
                return True
            if self._state == "half_open" and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded: close (logged when it was not closed)."""
        with self._lock:
            if self._state != "closed":
                log.info(
                    "%s breaker closes: a trial call succeeded %.1f s after it opened",
                    self.name,
                    self._clock() - self._opened_at,
                )
            self._state, self._failures, self._trial_running = "closed", 0, False

    def record_failure(self, reason: str = "failed call") -> None:
        """A call failed: open after ``failures`` in a row, or at once when half-open."""
        with self._lock:
            self._failures += 1
            if self._state == "half_open" or self._failures >= self._threshold:
                if self._state != "open":
                    log.warning(
                        "%s breaker opens for %.1f s after %d consecutive failure(s)%s; last: %s",
                        self.name,
                        self._reset,
                        self._failures,
                        " (the half-open trial failed)" if self._state == "half_open" else "",
                        reason,
                    )
                self._state, self._opened_at, self._trial_running = "open", self._clock(), False


class LastKnown:
    """Thread-safe LRU of the last features seen per entity key."""

    def __init__(self, capacity: int) -> None:
        """Hold at most ``capacity`` entities."""
        self._capacity = capacity
        self._items: OrderedDict[int, FeatureRow] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: int) -> FeatureRow | None:
        """The remembered features of ``key`` (marking it recently used)."""
        with self._lock:
            row = self._items.get(key)
            if row is not None:
                self._items.move_to_end(key)
            return row

    def put(self, key: int, row: FeatureRow) -> None:
        """Remember ``row`` for ``key``, evicting the least recently used beyond capacity."""
        with self._lock:
            self._items[key] = row
            self._items.move_to_end(key)
            while len(self._items) > self._capacity:
                self._items.popitem(last=False)


@dataclass(frozen=True)
class Lookup:
    """Features of a request's entities and whether they came from the fallback."""

    rows: list[FeatureRow]
    fallback: bool


@dataclass
class LookupStats:
    """Counts since start, as of when they were read (the metrics read them at scrape time)."""

    #: Requests' lookups (one per scoring request).
    lookups: int
    #: Rows looked up (all of them) and rows answered from the fallback.
    rows: int
    fallback_rows: int
    #: Store calls made, and the distinct entity pairs they asked for.
    store_reads: int
    store_entities: int
    #: Store calls finished (answered or raised) per :data:`READ_BUCKETS` bound (not
    #: cumulative; the last entry counts those above every bound), and their total time.
    read_buckets: list[int]
    read_seconds: float
    #: Failed store calls by reason: ``timeout``, ``error``.
    store_failures: dict[str, int]
    #: Lookups answered from the fallback by reason: ``store_failed``, ``breaker_open``,
    #: ``no_worker`` (no worker free within the queue bound; never a breaker failure).
    fallbacks: dict[str, int]
    #: Further periods given to calls past their deadline, by rule (``stall``,
    #: ``saturated``, ``starved``; see :mod:`driftline.serving.guard`).
    extensions: dict[str, int]

    @classmethod
    def of(cls, stats: GuardStats) -> LookupStats:
        """The guard's counts under the feature lookup's names."""
        return cls(
            lookups=stats.requests,
            rows=stats.items,
            fallback_rows=sum(stats.fallback_items.values()),
            store_reads=stats.calls,
            store_entities=stats.call_items,
            read_buckets=stats.call_buckets,
            read_seconds=stats.call_seconds,
            store_failures=stats.failures,
            fallbacks=stats.fallbacks,
            extensions=stats.extensions,
        )


class GuardedFeatures:
    """A :class:`FeatureSource` behind the serving guard and a last-known cache.

    Args:
        source: The store.
        timeout_seconds: Longest a store call of one entity pair may take, from its start.
        per_entity_seconds: Added to the limit for each further distinct entity pair
            in the call.
        breaker: Opened by consecutive failed store calls.
        cache_size: Entities of each kind remembered for the fallback.
        workers: Threads calling the store; each takes everything pending.
        queue_seconds: Longest a lookup waits for a free worker (then the fallback,
            ``no_worker``; never a store failure).
        max_entities: Most distinct entity pairs in one store call (whole requests
            are never split, so one larger request still goes alone).
        max_abandoned: Most worker threads left behind in calls past their deadline.
        thread_clock: The guard's reading of a worker's scheduler times (tests pass theirs).
    """

    def __init__(
        self,
        source: FeatureSource,
        *,
        timeout_seconds: float,
        breaker: CircuitBreaker,
        per_entity_seconds: float = 0.0,
        cache_size: int = 100_000,
        workers: int = 2,
        queue_seconds: float = 1.0,
        max_entities: int = 1024,
        max_abandoned: int = 16,
        thread_clock: ThreadClock = thread_times,
    ) -> None:
        """Wrap ``source``; worker threads start with the first lookup."""
        self.breaker = breaker
        self._guard: CoalescingGuard[EntityKey, FeatureRow] = CoalescingGuard(
            source.fetch,
            names=GuardNames(store="feature store", items="entities", thread="features"),
            logger=log,
            timeout_seconds=timeout_seconds,
            per_item_seconds=per_entity_seconds,
            breaker=breaker,
            workers=workers,
            queue_seconds=queue_seconds,
            max_items=max_entities,
            max_abandoned=max_abandoned,
            thread_clock=thread_clock,
        )
        self._users = LastKnown(cache_size)
        self._merchants = LastKnown(cache_size)

    @property
    def queued(self) -> int:
        """Lookups waiting for a free worker now."""
        return self._guard.queued

    @property
    def stats(self) -> LookupStats:
        """The counts since start, as of now."""
        return LookupStats.of(self._guard.stats())

    def lookup(self, entities: Sequence[EntityKey]) -> Lookup:
        """Features of ``entities``; the fallback when the store fails, is slow or open."""
        if not entities:
            return Lookup([], fallback=False)
        outcome = self._guard.ask(entities)
        if outcome.answers is None:
            return Lookup(self._fallback_rows(entities), fallback=True)
        self._remember(entities, outcome.answers)
        return Lookup(outcome.answers, fallback=False)

    def _remember(self, entities: Sequence[EntityKey], rows: list[FeatureRow]) -> None:
        for (user, merchant), row in zip(entities, rows, strict=True):
            self._users.put(user, {name: row[name] for name in USER_FEATURES})
            self._merchants.put(merchant, {name: row[name] for name in MERCHANT_FEATURES})

    def _fallback_rows(self, entities: Sequence[EntityKey]) -> list[FeatureRow]:
        rows = []
        for user, merchant in entities:
            row = missing_row()
            row.update(self._users.get(user) or {})
            row.update(self._merchants.get(merchant) or {})
            rows.append(row)
        return rows

    def close(self) -> None:
        """Stop the workers without waiting for a call that is still hanging."""
        self._guard.close()
