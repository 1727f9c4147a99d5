"""Fresh features at request time: one guarded event-store call per request.

Each scored transaction becomes an :class:`~driftline.core.fresh.Event`; the request's
events go to the event state (:mod:`driftline.data.events`) in one
``record_and_read`` call, which records them (once per transaction id) and returns each
one's user and merchant history; :func:`~driftline.core.fresh.fresh_features` (the one
computation the offline job uses too) then gives the ``FRESH_FEATURES`` of each row.

:class:`GuardedEvents` guards that call like :class:`~driftline.serving.lookup.GuardedFeatures`
guards the Feast read, so a failing or slow event store degrades rows instead of failing
requests:

* **Coalescing.** Concurrent requests wait in one queue; the worker thread takes
  everything pending and makes one ``record_and_read`` for all of it (the SQLite store
  serialises writers anyway: one transaction for many requests instead of one each).
* **A timeout on the store call only**, from the call's start: ``timeout`` plus an
  allowance per further event in the call. A call past its deadline fails once for its
  whole batch and its worker is replaced; a waiter woken well after the deadline (the
  process stalled) gives the call one more period.
* **A circuit breaker** of its own (the Feast store's stays independent). A failed,
  slow or refused call answers its rows with NaN fresh features, and the rows are
  flagged ``features_fallback``; the counts by reason are metrics
  (:class:`EventMetrics`).

A call that timed out may still have recorded its events (the store commits them
whole): the transactions did happen, so the state keeps them.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from driftline.core.feature_spec import FRESH_FEATURES
from driftline.core.fresh import Event, fresh_features
from driftline.serving.lookup import BREAKER_STATE_VALUE, READ_BUCKETS, CircuitBreaker
from driftline.serving.metrics import counts_by
from driftline.serving.schemas import Transaction

log = logging.getLogger(__name__)

#: ``FRESH_FEATURES`` name -> value (NaN when the event store could not answer).
FreshRow = dict[str, float]
#: What the store returns per event: the user's and the merchant's stored events.
History = tuple[list[Event], list[Event]]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class EventState(Protocol):
    """What the scorer needs of an event store (``driftline.data.events.EventStore``)."""

    def record_and_read(self, txns: Sequence[Event]) -> list[History]:
        """Record ``txns`` (once per id) and return each one's user and merchant events."""
        ...

    def close(self) -> None:
        """Release the store's connections."""
        ...


def event_of(txn: Transaction) -> Event:
    """The event of a scored transaction (time as exact microseconds since the epoch, UTC)."""
    return Event(
        ts_us=(txn.ts - _EPOCH) // _MICROSECOND,
        transaction_id=txn.transaction_id,
        user_id=txn.user_id,
        merchant_id=txn.merchant_id,
        amount=float(txn.amount),
        device_id=txn.device_id,
        country=txn.merchant_country,
    )


def missing_fresh() -> FreshRow:
    """A row whose every fresh feature is missing."""
    return dict.fromkeys(FRESH_FEATURES, math.nan)


@dataclass(frozen=True)
class FreshLookup:
    """The fresh features of a request's rows and why they fell back (None: they did not).

    ``reason`` is ``store_failed`` (the call raised or passed its deadline),
    ``breaker_open`` or ``no_worker`` (no worker free within the queue bound).
    """

    rows: list[FreshRow]
    reason: str | None = None

    @property
    def fallback(self) -> bool:
        """Whether the rows carry NaN fresh features instead of computed ones."""
        return self.reason is not None


@dataclass
class EventStats:
    """Counts since start (read by the metrics at scrape time; monotonic)."""

    #: Requests asked (one per scoring request) and their rows.
    requests: int = 0
    rows: int = 0
    #: Store calls made and the events they carried.
    calls: int = 0
    events: int = 0
    #: Finished store calls per :data:`READ_BUCKETS` bound (the last: above every bound),
    #: and their total time.
    call_buckets: list[int] = field(default_factory=lambda: [0] * (len(READ_BUCKETS) + 1))
    call_seconds: float = 0.0
    #: Failed store calls by reason.
    failures: dict[str, int] = field(default_factory=lambda: {"timeout": 0, "error": 0})
    #: Rows answered with NaN fresh features, by reason.
    fallback_rows: dict[str, int] = field(
        default_factory=lambda: {"store_failed": 0, "breaker_open": 0, "no_worker": 0}
    )


class _Request:
    """One request's events, waiting for the call that answers them."""

    def __init__(self, events: list[Event]) -> None:
        self.events = events
        self.batch: _Batch | None = None
        self.started = threading.Event()
        self.done = threading.Event()
        self.histories: list[History] | None = None
        self.reason: str | None = None


class _Batch:
    """Requests answered by one store call; its outcome is settled exactly once."""

    def __init__(self, requests: list[_Request], started: float, limit: float) -> None:
        self.requests = requests
        self.deadline = started + limit
        self.limit = limit
        self._lock = threading.Lock()
        self.settled = False
        self.expired = False

    def settle(self, *, expire: bool = False) -> bool:
        """Claim the right to settle the outcome (False when already settled)."""
        with self._lock:
            if self.settled:
                return False
            self.settled, self.expired = True, expire
            return True


@dataclass(frozen=True)
class PendingFresh:
    """A request handed to :meth:`GuardedEvents.begin`, to pass to ``finish``."""

    request: _Request


class GuardedEvents:
    """The event store behind a coalescing worker, a timeout and a breaker.

    Args:
        open_store: Opens the store (``driftline.data.events.open_event_store``); called
            by :meth:`open` at start-up, and again by the next call while it has failed.
        timeout_seconds: Longest a store call of one event may take, from its start.
        per_event_seconds: Added to the limit for each further event in the call.
        breaker: Opened by consecutive failed calls.
        queue_seconds: Longest a request waits for a free worker (then NaN features,
            ``no_worker``; not a store failure).
        max_events: Most events in one coalesced call (a larger request goes alone).
        max_abandoned: Most workers left behind in calls past their deadline.
    """

    def __init__(
        self,
        open_store: Callable[[], EventState],
        *,
        timeout_seconds: float,
        breaker: CircuitBreaker,
        per_event_seconds: float = 0.0,
        queue_seconds: float = 1.0,
        max_events: int = 1024,
        max_abandoned: int = 4,
    ) -> None:
        """Nothing is opened and no thread started until :meth:`open` or the first call."""
        self._open_store = open_store
        self._store: EventState | None = None
        self._store_lock = threading.Lock()
        self._timeout = timeout_seconds
        self._per_event = per_event_seconds
        self._stall_seconds = max(0.002, timeout_seconds / 5.0)
        self._queue_seconds = queue_seconds
        self._max_events = max_events
        self._max_abandoned = max_abandoned
        self.breaker = breaker
        self.stats = EventStats()
        self._cond = threading.Condition()
        self._pending: deque[_Request] = deque()
        self._live = 0
        self._abandoned = 0
        self._closed = False

    # Lifecycle ---------------------------------------------------------------------------

    def open(self) -> None:
        """Open the store before traffic (a failure only logs; calls retry the open)."""
        try:
            self._opened()
        except Exception:  # the breaker and the NaN fallback handle a store that stays down
            log.warning("event store did not open; fresh features fall back", exc_info=True)

    def _opened(self) -> EventState:
        with self._store_lock:
            if self._store is None:
                self._store = self._open_store()
            return self._store

    def close(self) -> None:
        """Stop the worker, answer what is pending with the fallback, close the store."""
        with self._cond:
            self._closed = True
            pending, self._pending = list(self._pending), deque()
            self._cond.notify_all()
        self._resolve_fallback(pending, "no_worker")
        with self._store_lock:
            store, self._store = self._store, None
        if store is not None:
            try:
                store.close()
            except Exception:
                log.warning("event store did not close cleanly", exc_info=True)

    @property
    def queued(self) -> int:
        """Requests waiting for the worker now."""
        with self._cond:
            return len(self._pending)

    # The caller's side ---------------------------------------------------------------

    def fresh(self, transactions: Sequence[Transaction]) -> FreshLookup:
        """Record ``transactions`` and return their fresh features (NaN on failure)."""
        return self.finish(self.begin(transactions))

    def begin(self, transactions: Sequence[Transaction]) -> PendingFresh:
        """Hand ``transactions`` to the worker without waiting (see :meth:`finish`).

        The scorer begins before its Feast lookup and finishes after it, so the two
        stores are asked at the same time.
        """
        request = _Request([event_of(t) for t in transactions])
        if not request.events:
            request.histories = []
            request.done.set()
        elif self.breaker.state == "open":
            self._resolve_fallback([request], "breaker_open")
        elif self._closed:
            self._resolve_fallback([request], "no_worker")
        else:
            self._enqueue(request)
        return PendingFresh(request)

    def finish(self, pending: PendingFresh) -> FreshLookup:
        """Wait for the call that answers ``pending`` (bounded), then compute its rows."""
        request = pending.request
        if not request.done.is_set():
            self._wait(request)
        return self._finish(request)

    def _wait(self, request: _Request) -> None:
        """Wait for the worker to start the call, then at most its limit from its start."""
        if not request.started.wait(self._queue_seconds) and self._withdraw(request):
            log.warning(
                "no event-store worker free within %.0f ms; fresh features fall back",
                self._queue_seconds * 1000.0,
            )
            self._resolve_fallback([request], "no_worker")
            return
        request.started.wait()  # set before anything is settled (also by the fallback)
        batch = request.batch
        if request.done.is_set() or batch is None:
            request.done.wait()
            return
        if not request.done.wait(max(0.0, batch.deadline - time.perf_counter())):
            late = time.perf_counter() - batch.deadline
            # Woken well after the deadline: the process was stalled, not known to be the
            # store. One more period; a hung store still fails one period later.
            if late < self._stall_seconds or not request.done.wait(batch.limit):
                self._expire(batch)
        request.done.wait()

    def _finish(self, request: _Request) -> FreshLookup:
        """Compute the rows' fresh features (or the NaN rows) and count the request."""
        with self._cond:
            self.stats.requests += 1
            self.stats.rows += len(request.events)
        if request.reason is not None or request.histories is None:
            return FreshLookup([missing_fresh() for _ in request.events], request.reason)
        rows = [
            fresh_features(event, users, merchants)
            for event, (users, merchants) in zip(request.events, request.histories, strict=True)
        ]
        return FreshLookup(rows)

    def _enqueue(self, request: _Request) -> None:
        with self._cond:
            self._pending.append(request)
            self._start_workers()
            self._cond.notify()

    def _withdraw(self, request: _Request) -> bool:
        with self._cond:
            try:
                self._pending.remove(request)
            except ValueError:
                return False
            return True

    # The worker's side ---------------------------------------------------------------

    def _start_workers(self) -> None:
        """Keep one live worker (lock held); an abandoned one is replaced, up to a bound."""
        while not self._closed and self._live < 1 and self._abandoned < self._max_abandoned:
            self._live += 1
            threading.Thread(target=self._work, name="events", daemon=True).start()

    def _work(self) -> None:
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
        """Whole pending requests up to ``max_events`` events (lock held)."""
        taken = [self._pending.popleft()]
        count = len(taken[0].events)
        while self._pending and count + len(self._pending[0].events) <= self._max_events:
            count += len(self._pending[0].events)
            taken.append(self._pending.popleft())
        return taken

    def _call(self, requests: list[_Request]) -> _Batch | None:
        """One ``record_and_read`` for ``requests`` (None when the breaker allowed none)."""
        # A transaction id sent twice at once (a retry racing its original) is asked once.
        distinct = list({e.transaction_id: e for r in requests for e in r.events}.values())
        started = time.perf_counter()
        batch = _Batch(requests, started, self._timeout + self._per_event * (len(distinct) - 1))
        for request in requests:
            request.batch = batch
            request.started.set()
        if not self.breaker.allow():
            if batch.settle():
                self._resolve_fallback(requests, "breaker_open")
            return None
        with self._cond:
            self.stats.calls += 1
            self.stats.events += len(distinct)
        try:
            try:
                histories = self._opened().record_and_read(distinct)
            finally:
                self._observe(time.perf_counter() - started)
            if len(histories) != len(distinct):
                raise ValueError(f"{len(histories)} histories for {len(distinct)} events")
        except Exception as error:  # any store failure degrades, never fails the request
            elapsed = (time.perf_counter() - started) * 1000.0
            if batch.settle():
                self._failed(
                    batch, "error", f"{type(error).__name__} after {elapsed:.1f} ms: {error}"
                )
            return batch
        if batch.settle():
            self.breaker.record_success()
            found = {e.transaction_id: h for e, h in zip(distinct, histories, strict=True)}
            for request in requests:
                request.histories = [found[e.transaction_id] for e in request.events]
                request.done.set()
        return batch

    def _observe(self, seconds: float) -> None:
        bucket = next((i for i, bound in enumerate(READ_BUCKETS) if seconds <= bound), -1)
        with self._cond:
            self.stats.call_buckets[bucket] += 1
            self.stats.call_seconds += seconds

    def _expire(self, batch: _Batch) -> None:
        """A caller saw ``batch``'s deadline pass: fail it once and replace its worker."""
        if not batch.settle(expire=True):
            return
        elapsed = (time.perf_counter() - batch.deadline + batch.limit) * 1000.0
        with self._cond:
            self._live -= 1
            self._abandoned += 1
            self._start_workers()
        events = sum(len(r.events) for r in batch.requests)
        self._failed(
            batch,
            "timeout",
            f"TimeoutError: no answer after {elapsed:.1f} ms "
            f"(limit {batch.limit * 1000.0:.0f} ms, {events} events)",
        )

    def _failed(self, batch: _Batch, kind: str, reason: str) -> None:
        log.warning("event store call failed: %s", reason)
        with self._cond:
            self.stats.failures[kind] += 1
        self.breaker.record_failure(reason)
        self._resolve_fallback(batch.requests, "store_failed")

    def _resolve_fallback(self, requests: list[_Request], reason: str) -> None:
        with self._cond:
            self.stats.fallback_rows[reason] += sum(len(r.events) for r in requests)
        for request in requests:
            request.reason = reason
            request.done.set()
            request.started.set()  # a waiter still waiting for a worker sees it settled


class EventMetrics(Collector):
    """The event store's calls, failures, fallback rows and breaker, at scrape time."""

    def __init__(self, events: GuardedEvents) -> None:
        """Report ``events``' counts."""
        self._events = events

    def collect(self) -> Iterator[Metric]:
        """The families (all ``driftline_event_store_*``)."""
        stats = self._events.stats
        yield CounterMetricFamily(
            "driftline_event_store_calls",
            "record_and_read calls to the event store (concurrent requests share one).",
            value=stats.calls,
        )
        yield CounterMetricFamily(
            "driftline_event_store_events",
            "Transactions recorded and read through the event store.",
            value=stats.events,
        )
        cumulative, buckets = 0, []
        for bound, count in zip((*READ_BUCKETS, math.inf), stats.call_buckets, strict=True):
            cumulative += count
            buckets.append(("+Inf" if bound == math.inf else str(bound), float(cumulative)))
        yield HistogramMetricFamily(
            "driftline_event_store_call_seconds",
            "Duration of finished event-store calls (a call still hanging is not in it).",
            buckets=buckets,
            sum_value=stats.call_seconds,
        )
        yield counts_by(
            "driftline_event_store_failures",
            "Failed event-store calls by reason (timeout: past the call limit from its "
            "start; error: the store raised).",
            "reason",
            stats.failures,
        )
        yield counts_by(
            "driftline_event_store_fallback_rows",
            "Rows scored with NaN fresh features (also in driftline_feature_fallback_total), "
            "by reason (store_failed, breaker_open, no_worker).",
            "reason",
            stats.fallback_rows,
        )
        yield GaugeMetricFamily(
            "driftline_event_store_breaker_state",
            "Event-store circuit breaker: 0 closed, 1 open, 2 half-open.",
            value=BREAKER_STATE_VALUE[self._events.breaker.state],
        )
        yield GaugeMetricFamily(
            "driftline_event_store_queued",
            "Requests waiting for the event-store worker now.",
            value=self._events.queued,
        )
