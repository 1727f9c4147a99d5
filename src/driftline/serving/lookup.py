"""Online features for scoring: coalesced store reads behind a timeout, a breaker and a cache.

:class:`FeatureSource` is what the scorer needs from a feature store: the
``STORE_NUMERIC`` values of each (user, merchant) pair. :class:`FeastFeatureSource`
reads them from the Feast online store (feature service ``fraud_v1``).
:class:`GuardedFeatures` wraps any source so that a failing or slow store degrades
scores instead of failing requests, and so that load alone never does:

* **Coalescing.** Each request's entities wait in one queue; a free worker thread takes
  everything pending (whole requests, distinct entity pairs) and answers it with one
  ``fetch``: 64 concurrent single-row requests make a handful of store reads, not 64.
* **A timeout on the store call only.** The deadline starts when the worker starts the
  call and grows with the work asked of it (a base plus an allowance per distinct
  entity pair: a merged read of 130 pairs is not held to a one-row budget), so waiting
  for a worker (bounded by the service's admission control, which caps requests in
  flight) never counts as slowness of the store. A call past its deadline
  fails once for its whole batch, and the worker stuck in it is replaced. Two cases
  are not known to be the store, and give the call one more period (at most
  :data:`MAX_EXTENSIONS` in all, so a hung store still fails, a few periods later):
  the waiter itself woke well after the deadline (the whole process was stalled: a
  garbage collection, CPU starvation), or the process was saturated during the call
  (its CPU time since the call started is at least :data:`SATURATED_SHARE` of the wall
  time: its own threads kept the worker from running; measured in the serving bench on
  one pinned core, where merged reads of ~64 pairs that take 2 ms alone took 65 ms on
  average with 16 batch requests in flight, and a few passed their 81 ms limit).
* **A circuit breaker.** Enough consecutive failed calls open a :class:`CircuitBreaker`;
  while the store cannot answer, each entity gets its last known features (an in-memory
  LRU of recent successful lookups) or missing values, which the model's preprocessor
  handles. Opening, half-opening and closing are logged with the reason.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol

from driftline.core.columns import STORE_NUMERIC
from driftline.core.feature_spec import JOIN_KEYS, MERCHANT_FEATURES, USER_FEATURES
from driftline.core.settings import Settings

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
#: Upper bounds (seconds) of the store-call duration histogram.
READ_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Process CPU time over wall time, since a store call started, at or above which the
#: process counts as saturated (a store call waiting on I/O uses none of it; a process
#: whose own threads hold the GIL back-to-back uses about one CPU's worth).
SATURATED_SHARE = 0.8
#: Most further periods a store call past its deadline is given (stall or saturation).
MAX_EXTENSIONS = 3


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
        rows: list[FeatureRow] = [{} for _ in entities]
        for read in reads:
            ids = list(dict.fromkeys(pair[read.side] for pair in entities))
            keys = [
                EntityKeyProto(join_keys=[read.join_key], entity_values=[ValueProto(int64_val=i)])
                for i in ids
            ]
            stored = provider.online_read(store.config, read.view, keys, read.features)
            if len(stored) != len(ids):
                raise ValueError(f"{read.view.name}: {len(stored)} rows for {len(ids)} keys")
            values: dict[int, FeatureRow] = {}
            for key, (_, found) in zip(ids, stored, strict=True):
                data = found or {}
                values[key] = {
                    name: _proto_number(data[name]) if name in data else math.nan
                    for name in read.features
                }
            for row, pair in zip(rows, entities, strict=True):
                row.update(values[pair[read.side]])
        return [{name: row[name] for name in STORE_NUMERIC} for row in rows]

    def fetch_via_get_online_features(self, entities: Sequence[EntityKey]) -> list[FeatureRow]:
        """The same rows through ``FeatureStore.get_online_features`` (the reference)."""
        store, service, _ = self._open()
        rows = [{"user_id": user, "merchant_id": merchant} for user, merchant in entities]
        found = store.get_online_features(features=service, entity_rows=rows).to_dict()
        return [{name: _number(found[name][i]) for name in STORE_NUMERIC} for i in range(len(rows))]


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
    """Counts since start (read by the metrics at scrape time; monotonic)."""

    #: Requests' lookups (one per scoring request).
    lookups: int = 0
    #: Rows looked up (all of them) and rows answered from the fallback.
    rows: int = 0
    fallback_rows: int = 0
    #: Store calls made, and the distinct entity pairs they asked for.
    store_reads: int = 0
    store_entities: int = 0
    #: Store calls finished (answered or raised) per :data:`READ_BUCKETS` bound (not
    #: cumulative; the last entry counts those above every bound), and their total time.
    read_buckets: list[int] = field(default_factory=lambda: [0] * (len(READ_BUCKETS) + 1))
    read_seconds: float = 0.0
    #: Failed store calls by reason: ``timeout``, ``error``.
    store_failures: dict[str, int] = field(default_factory=lambda: {"timeout": 0, "error": 0})
    #: Lookups answered from the fallback by reason: ``store_failed``, ``breaker_open``,
    #: ``no_worker`` (no worker free within the queue bound; never a breaker failure).
    fallbacks: dict[str, int] = field(
        default_factory=lambda: {"store_failed": 0, "breaker_open": 0, "no_worker": 0}
    )


class _Request:
    """One caller's lookup, waiting for the batch that answers it."""

    def __init__(self, entities: list[EntityKey]) -> None:
        self.entities = entities
        self.batch: _Batch | None = None
        self.started = threading.Event()
        self.done = threading.Event()
        self.rows: list[FeatureRow] | None = None
        #: Why the fallback answered (None: the store did).
        self.reason: str | None = None


def _saturated(batch: _Batch, now: float) -> bool:
    """Whether this process was CPU-bound since ``batch``'s call started."""
    wall = now - (batch.deadline - batch.limit)
    return wall > 0 and time.process_time() - batch.cpu_started >= SATURATED_SHARE * wall


class _Batch:
    """Requests answered by one store call; its outcome is settled exactly once."""

    def __init__(self, requests: list[_Request], deadline: float, limit: float) -> None:
        self.requests = requests
        self.deadline = deadline
        #: The process's CPU time when the call started (see :data:`SATURATED_SHARE`).
        self.cpu_started = time.process_time()
        #: The call's time limit in seconds (``deadline`` is its start plus this).
        self.limit = limit
        self.lock = threading.Lock()
        self.settled = False
        #: The call ran past its deadline (its worker is being replaced).
        self.expired = False

    def settle(self, *, expire: bool = False) -> bool:
        """Claim the right to settle the outcome (False when already settled).

        ``expire`` marks the call as past its deadline in the same step, so the worker
        that loses the race to settle always sees that it was replaced.
        """
        with self.lock:
            if self.settled:
                return False
            self.settled, self.expired = True, expire
            return True


class GuardedFeatures:
    """A :class:`FeatureSource` behind coalescing workers, a timeout, a breaker and a cache.

    Args:
        source: The store.
        timeout_seconds: Longest a store call of one entity pair may take, from its start.
        per_entity_seconds: Added to the limit for each further distinct entity pair
            in the call.
        breaker: Opened by consecutive failed store calls.
        cache_size: Entities of each kind remembered for the fallback.
        workers: Threads calling the store; each takes everything pending.
        queue_seconds: Longest a lookup waits for a free worker. Past it the lookup is
            answered from the fallback (counted as ``no_worker``, not a store failure);
            it only happens when every worker is stuck in a call, since a free worker
            takes all pending lookups at once.
        max_entities: Most distinct entity pairs in one store call (whole requests
            are never split, so one larger request still goes alone).
        max_abandoned: Most worker threads left behind in calls past their deadline
            (each is replaced, so a hung store still gets trial calls); beyond it no
            replacement is started until one returns.
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
    ) -> None:
        """Wrap ``source``; worker threads start with the first lookup."""
        self._source = source
        self._timeout = timeout_seconds
        self._per_entity = per_entity_seconds
        #: A waiter woken this much after the deadline saw a stall of the process.
        self._stall_seconds = max(0.002, timeout_seconds / 5.0)
        self._queue_seconds = queue_seconds
        self._max_entities = max_entities
        self._max_abandoned = max_abandoned
        self._workers = workers
        self.breaker = breaker
        self.stats = LookupStats()
        self._users = LastKnown(cache_size)
        self._merchants = LastKnown(cache_size)
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._live = 0  # workers not abandoned in a call past its deadline
        self._abandoned = 0
        self._closed = False

    @property
    def queued(self) -> int:
        """Lookups waiting for a free worker now."""
        with self._cond:
            return len(self._pending)

    # The caller's side ---------------------------------------------------------------

    def lookup(self, entities: Sequence[EntityKey]) -> Lookup:
        """Features of ``entities``; the fallback when the store fails, is slow or open."""
        request = _Request(list(entities))
        if not request.entities:
            return Lookup([], fallback=False)
        if self.breaker.state == "open":  # no call would be allowed: do not queue
            self._resolve_fallback([request], "breaker_open")
        elif self._closed:  # shutting down: no worker will take it
            self._resolve_fallback([request], "no_worker")
        else:
            self._enqueue(request)
            self._wait(request)
        return self._finish(request)

    def _wait(self, request: _Request) -> None:
        """Wait for a worker to start the call, then at most the timeout from its start."""
        if not request.started.wait(self._queue_seconds) and self._withdraw(request):
            log.warning(
                "no feature worker free within %.0f ms (%d workers busy in store calls); "
                "answered from the fallback",
                self._queue_seconds * 1000.0,
                self._workers,
            )
            self._resolve_fallback([request], "no_worker")
            return
        request.started.wait()  # set by the worker before it settles anything
        batch = request.batch
        assert batch is not None
        deadline, extensions = batch.deadline, 0
        while not request.done.wait(max(0.0, deadline - time.perf_counter())):
            now = time.perf_counter()
            # Past the deadline, but the time lost is not known to be the store's when
            # this waiter woke late (the process was stalled) or the process was busy
            # all along (its own threads starved the worker): one more period, a few
            # at most, so a hung store still fails.
            if extensions < MAX_EXTENSIONS and (
                now - deadline >= self._stall_seconds or _saturated(batch, now)
            ):
                deadline, extensions = now + batch.limit, extensions + 1
                continue
            self._expire(batch)
            break
        request.done.wait()

    def _finish(self, request: _Request) -> Lookup:
        """Count the answered lookup and return it."""
        assert request.rows is not None
        fallback = request.reason is not None
        with self._cond:
            self.stats.lookups += 1
            self.stats.rows += len(request.rows)
            if fallback:
                self.stats.fallback_rows += len(request.rows)
        return Lookup(request.rows, fallback=fallback)

    def _enqueue(self, request: _Request) -> None:
        with self._cond:
            self._pending.append(request)
            self._start_workers()
            self._cond.notify()

    def _withdraw(self, request: _Request) -> bool:
        """Take a request that no worker started off the queue (False if one did)."""
        with self._cond:
            try:
                self._pending.remove(request)
            except ValueError:
                return False
            return True

    # The workers' side ---------------------------------------------------------------

    def _start_workers(self) -> None:
        """Keep ``workers`` live threads (lock held); abandoned ones are replaced."""
        while (
            not self._closed
            and self._live < self._workers
            and self._abandoned + self._live < self._workers + self._max_abandoned
        ):
            self._live += 1
            threading.Thread(target=self._work, name="features", daemon=True).start()

    def _work(self) -> None:
        """Take everything pending and answer it with one store call, until closed."""
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    self._live -= 1
                    return
                requests = self._take()
            batch = self._call(requests)
            if batch is not None and batch.expired:
                with self._cond:  # replaced when the call expired: leave
                    self._abandoned -= 1
                    self._start_workers()
                return

    def _take(self) -> list[_Request]:
        """Whole pending requests up to ``max_entities`` distinct pairs (lock held)."""
        taken = [self._pending.popleft()]
        seen = set(taken[0].entities)
        while self._pending:
            more = set(self._pending[0].entities) - seen
            if len(seen) + len(more) > self._max_entities:
                break
            seen |= more
            taken.append(self._pending.popleft())
        return taken

    def _call(self, requests: list[_Request]) -> _Batch | None:
        """One store call for ``requests`` (None when the breaker allowed none)."""
        wanted = list(dict.fromkeys(e for r in requests for e in r.entities))
        limit = self._timeout + self._per_entity * (len(wanted) - 1)
        started = time.perf_counter()
        batch = _Batch(requests, deadline=started + limit, limit=limit)
        for request in requests:
            request.batch = batch
            request.started.set()
        if not self.breaker.allow():
            if batch.settle():
                self._resolve_fallback(requests, "breaker_open")
            return None
        with self._cond:
            self.stats.store_reads += 1
            self.stats.store_entities += len(wanted)
        try:
            try:
                rows = self._source.fetch(wanted)
            finally:
                self._observe(time.perf_counter() - started)
            if len(rows) != len(wanted):
                raise ValueError(f"{len(rows)} feature rows for {len(wanted)} entities")
        except Exception as error:  # any store failure degrades, never fails the request
            elapsed = (time.perf_counter() - started) * 1000.0
            if batch.settle():
                self._failed(
                    batch, "error", f"{type(error).__name__} after {elapsed:.1f} ms: {error}"
                )
            return batch
        if batch.settle():
            self.breaker.record_success()
            self._remember(wanted, rows)
            found = dict(zip(wanted, rows, strict=True))
            for request in requests:
                request.rows = [found[e] for e in request.entities]
                request.done.set()
        return batch

    def _observe(self, seconds: float) -> None:
        """Count a finished store call's duration in the histogram."""
        bucket = next((i for i, bound in enumerate(READ_BUCKETS) if seconds <= bound), -1)
        with self._cond:
            self.stats.read_buckets[bucket] += 1
            self.stats.read_seconds += seconds

    def _expire(self, batch: _Batch) -> None:
        """A caller saw ``batch``'s deadline pass: fail it once and replace its worker."""
        if not batch.settle(expire=True):
            return
        elapsed = (time.perf_counter() - batch.deadline + batch.limit) * 1000.0
        with self._cond:
            self._live -= 1
            self._abandoned += 1
            self._start_workers()
        entities = len({e for r in batch.requests for e in r.entities})
        self._failed(
            batch,
            "timeout",
            f"TimeoutError: no answer after {elapsed:.1f} ms "
            f"(limit {batch.limit * 1000.0:.0f} ms, {entities} entities)",
        )

    def _failed(self, batch: _Batch, kind: str, reason: str) -> None:
        """Count and log a failed store call, then answer its requests from the fallback."""
        log.warning("feature store call failed: %s", reason)
        with self._cond:
            self.stats.store_failures[kind] += 1
        self.breaker.record_failure(reason)
        self._resolve_fallback(batch.requests, "store_failed")

    # Shared ----------------------------------------------------------------------------

    def _resolve_fallback(self, requests: list[_Request], reason: str) -> None:
        with self._cond:
            self.stats.fallbacks[reason] += len(requests)
        for request in requests:
            request.rows, request.reason = self._fallback_rows(request.entities), reason
            request.done.set()

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
        with self._cond:
            self._closed = True
            pending, self._pending = list(self._pending), deque()
            self._cond.notify_all()
        if pending:
            self._resolve_fallback(pending, "no_worker")
