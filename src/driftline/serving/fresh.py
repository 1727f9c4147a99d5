"""Fresh features at request time: one guarded event-store call per request.

Each scored transaction becomes an :class:`~driftline.core.fresh.Event`; the request's
events go to the event state (:mod:`driftline.data.events`) in one
``record_and_read`` call, which records them (once per transaction id) and returns each
one's user and merchant history; :func:`~driftline.core.fresh.fresh_features` (the one
computation the offline job uses too) then gives the ``FRESH_FEATURES`` of each row.

:class:`GuardedEvents` puts that call behind the serving guard
(:class:`~driftline.serving.guard.CoalescingGuard`, the same one the Feast read has in
:class:`~driftline.serving.lookup.GuardedFeatures`), so a failing or slow event store
degrades rows instead of failing requests: concurrent requests are coalesced into one
``record_and_read`` (the SQLite store serialises writers anyway: one transaction for
many requests instead of one each), the call is timed from its start with an allowance
per further event, a call slowed by a stalled, saturated or CPU-starved process gets
further periods (at most :data:`~driftline.serving.guard.MAX_EXTENSIONS`), and the
event store has a circuit breaker of its own (the Feast store's stays independent). A
failed, slow or refused call answers its rows with NaN fresh features, and the rows are
flagged ``features_fallback``; the counts by reason are metrics (:class:`EventMetrics`).

A call that timed out may still have recorded its events (the store commits them
whole): the transactions did happen, so the state keeps them.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from driftline.core.feature_spec import FRESH_FEATURES
from driftline.core.fresh import Event, epoch_micros, fresh_features
from driftline.serving.guard import (
    READ_BUCKETS,
    CoalescingGuard,
    GuardNames,
    GuardStats,
    ThreadClock,
    Ticket,
    thread_times,
)
from driftline.serving.lookup import BREAKER_STATE_VALUE, CircuitBreaker
from driftline.serving.metrics import counts_by
from driftline.serving.schemas import Transaction

log = logging.getLogger(__name__)

#: ``FRESH_FEATURES`` name -> value (NaN when the event store could not answer).
FreshRow = dict[str, float]
#: What the store returns per event: the user's and the merchant's stored events.
History = tuple[list[Event], list[Event]]


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
        ts_us=epoch_micros(txn.ts),
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


@dataclass(frozen=True)
class PendingFresh:
    """A request handed to :meth:`GuardedEvents.begin`, to pass to ``finish``."""

    ticket: Ticket[Event, History]


def _transaction_id(event: Event) -> str:
    """What makes two events the same: a retry racing its original is asked once."""
    return event.transaction_id


class GuardedEvents:
    """The event store behind the serving guard (one worker) and its own breaker.

    Args:
        open_store: Opens the store (``driftline.data.events.open_event_store``); called
            by :meth:`open` at start-up, and again by the next call while it has failed.
        timeout_seconds: Longest a store call of one event may take, from its start.
        per_event_seconds: Added to the limit for each further event in the call.
        breaker: Opened by consecutive failed calls.
        queue_seconds: Longest a request waits for a free worker (then NaN features,
            ``no_worker``; not a store failure).
        max_events: Most distinct events in one coalesced call (a larger request goes
            alone).
        max_abandoned: Most workers left behind in calls past their deadline.
        thread_clock: The guard's reading of a worker's scheduler times (tests pass theirs).
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
        thread_clock: ThreadClock = thread_times,
    ) -> None:
        """Nothing is opened and no thread started until :meth:`open` or the first call."""
        self._open_store = open_store
        self._store: EventState | None = None
        self._store_lock = threading.Lock()
        self.breaker = breaker
        self._guard: CoalescingGuard[Event, History] = CoalescingGuard(
            self._record_and_read,
            names=GuardNames(store="event store", items="events", thread="events"),
            logger=log,
            key=_transaction_id,
            timeout_seconds=timeout_seconds,
            per_item_seconds=per_event_seconds,
            breaker=breaker,
            workers=1,
            queue_seconds=queue_seconds,
            max_items=max_events,
            max_abandoned=max_abandoned,
            thread_clock=thread_clock,
        )

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

    def _record_and_read(self, events: list[Event]) -> list[History]:
        """The guard's store call: one ``record_and_read`` of distinct events."""
        return self._opened().record_and_read(events)

    def close(self) -> None:
        """Stop the worker, answer what is pending with the fallback, close the store."""
        self._guard.close()
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
        return self._guard.queued

    @property
    def stats(self) -> GuardStats:
        """The counts since start, as of now (items are events, requests' and calls')."""
        return self._guard.stats()

    # The caller's side ---------------------------------------------------------------

    def fresh(self, transactions: Sequence[Transaction]) -> FreshLookup:
        """Record ``transactions`` and return their fresh features (NaN on failure)."""
        return self.finish(self.begin(transactions))

    def begin(self, transactions: Sequence[Transaction]) -> PendingFresh:
        """Hand ``transactions`` to the worker without waiting (see :meth:`finish`).

        The scorer begins before its Feast lookup and finishes after it, so the two
        stores are asked at the same time.
        """
        return PendingFresh(self._guard.submit([event_of(t) for t in transactions]))

    def finish(self, pending: PendingFresh) -> FreshLookup:
        """Wait for the call that answers ``pending`` (bounded), then compute its rows."""
        events = pending.ticket.items
        outcome = self._guard.wait(pending.ticket)
        if outcome.answers is None:
            return FreshLookup([missing_fresh() for _ in events], outcome.reason)
        rows = [
            fresh_features(event, users, merchants)
            for event, (users, merchants) in zip(events, outcome.answers, strict=True)
        ]
        return FreshLookup(rows)


class EventMetrics(Collector):
    """The event store's calls, failures, fallback rows and breaker, at scrape time."""

    def __init__(self, events: GuardedEvents) -> None:
        """Report ``events``' counts."""
        self._events = events

    def collect(self) -> Iterator[Metric]:
        """The families (all ``driftline_event_store_*``)."""
        stats = self._events.stats  # one consistent snapshot per scrape
        yield CounterMetricFamily(
            "driftline_event_store_calls",
            "record_and_read calls to the event store (concurrent requests share one).",
            value=stats.calls,
        )
        yield CounterMetricFamily(
            "driftline_event_store_events",
            "Transactions recorded and read through the event store.",
            value=stats.call_items,
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
            "driftline_event_store_call_extensions",
            "Further periods given to event-store calls past their limit, by rule (stall, "
            "saturated, starved; as driftline_feature_store_call_extensions).",
            "rule",
            stats.extensions,
        )
        yield counts_by(
            "driftline_event_store_fallback_rows",
            "Rows scored with NaN fresh features (also in driftline_feature_fallback_total), "
            "by reason (store_failed, breaker_open, no_worker).",
            "reason",
            stats.fallback_items,
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
