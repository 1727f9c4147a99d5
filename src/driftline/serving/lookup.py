"""Online features for scoring, guarded by a timeout, a circuit breaker and a cache.

:class:`FeatureSource` is what the scorer needs from a feature store: the
``STORE_NUMERIC`` values of each (user, merchant) pair. :class:`FeastFeatureSource`
reads them from the Feast online store (feature service ``fraud_v1``).
:class:`GuardedFeatures` wraps any source so that a failing or slow store degrades
scores instead of failing requests: a call that raises or exceeds the timeout is a
failure; enough consecutive failures open a :class:`CircuitBreaker`; while the store
cannot answer, each entity gets its last known features (an in-memory LRU of recent
successful lookups) or missing values, which the model's preprocessor handles.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from driftline.core.columns import STORE_NUMERIC
from driftline.core.feature_spec import MERCHANT_FEATURES, USER_FEATURES
from driftline.core.settings import Settings

if TYPE_CHECKING:
    from feast import FeatureService, FeatureStore

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


class FeastFeatureSource:
    """Feast online store, built once per process from settings (lazily, on first use)."""

    def __init__(self, settings: Settings) -> None:
        """Remember the settings; nothing is opened until the first lookup."""
        self._settings = settings
        self._lock = threading.Lock()
        self._store: tuple[FeatureStore, FeatureService] | None = None

    def _open(self) -> tuple[FeatureStore, FeatureService]:
        """The store and feature service; a failure is retried on the next lookup."""
        with self._lock:
            if self._store is None:
                from driftline.data.feast import FEATURE_SERVICE, get_store

                store = get_store(self._settings)
                self._store = (store, store.get_feature_service(FEATURE_SERVICE))
            return self._store

    def warm_up(self) -> None:
        """Open the store and read once, so the first request does not pay for it.

        Opening Feast (registry, online-store connection) takes far longer than the
        lookup timeout; without this the first requests time out, open the breaker and
        are answered with fallback features.
        """
        self.fetch([(0, 0)])

    def fetch(self, entities: Sequence[EntityKey]) -> list[FeatureRow]:
        """Read the ``fraud_v1`` features of the entity pairs from the online store."""
        store, service = self._open()
        rows = [{"user_id": user, "merchant_id": merchant} for user, merchant in entities]
        found = store.get_online_features(features=service, entity_rows=rows).to_dict()
        return [{name: _number(found[name][i]) for name in STORE_NUMERIC} for i in range(len(rows))]


class CircuitBreaker:
    """Consecutive-failure breaker: closed -> open (for ``reset_seconds``) -> half-open.

    Half-open lets exactly one trial call through; its success closes the breaker, its
    failure opens it again. ``clock`` is injectable so tests need not sleep.
    """

    def __init__(
        self,
        failures: int,
        reset_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Start closed."""
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
        """The current state (``open`` turns ``half_open`` only when a call is allowed)."""
        return self._state

    def allow(self) -> bool:
        """Whether a call may go to the store now."""
        with self._lock:
            if self._state == "closed":
                return True
            if self._state == "open" and self._clock() - self._opened_at >= self._reset:
                self._state, self._trial_running = "half_open", False
            if self._state == "half_open" and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def record_success(self) -> None:
        """A call succeeded: close."""
        with self._lock:
            self._state, self._failures, self._trial_running = "closed", 0, False

    def record_failure(self) -> None:
        """A call failed: open after ``failures`` in a row, or at once when half-open."""
        with self._lock:
            self._failures += 1
            if self._state == "half_open" or self._failures >= self._threshold:
                if self._state != "open":
                    log.warning("feature store breaker opens after %d failures", self._failures)
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


class GuardedFeatures:
    """A :class:`FeatureSource` behind a timeout, a circuit breaker and a last-known cache.

    The call runs on a small thread pool so a hung store costs the request at most the
    timeout; a call still running after it finishes in the background and is ignored.
    """

    def __init__(
        self,
        source: FeatureSource,
        *,
        timeout_seconds: float,
        breaker: CircuitBreaker,
        cache_size: int = 100_000,
        workers: int = 4,
    ) -> None:
        """Wrap ``source``; ``cache_size`` entities of each kind are remembered."""
        self._source = source
        self._timeout = timeout_seconds
        self.breaker = breaker
        self._users = LastKnown(cache_size)
        self._merchants = LastKnown(cache_size)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="features")

    def lookup(self, entities: Sequence[EntityKey]) -> Lookup:
        """Features of ``entities``; the fallback when the store fails, is slow or open."""
        if not self.breaker.allow():
            return self._fallback(entities)
        try:
            rows = self._pool.submit(self._source.fetch, list(entities)).result(self._timeout)
            if len(rows) != len(entities):
                raise ValueError(f"{len(rows)} feature rows for {len(entities)} entities")
        except Exception as error:  # any store failure degrades, never fails the request
            log.warning("feature lookup failed (%s): %s", type(error).__name__, error)
            self.breaker.record_failure()
            return self._fallback(entities)
        self.breaker.record_success()
        self._remember(entities, rows)
        return Lookup(rows, fallback=False)

    def _remember(self, entities: Sequence[EntityKey], rows: list[FeatureRow]) -> None:
        for (user, merchant), row in zip(entities, rows, strict=True):
            self._users.put(user, {name: row[name] for name in USER_FEATURES})
            self._merchants.put(merchant, {name: row[name] for name in MERCHANT_FEATURES})

    def _fallback(self, entities: Sequence[EntityKey]) -> Lookup:
        rows = []
        for user, merchant in entities:
            row = missing_row()
            row.update(self._users.get(user) or {})
            row.update(self._merchants.get(merchant) or {})
            rows.append(row)
        return Lookup(rows, fallback=True)

    def close(self) -> None:
        """Stop the pool without waiting for a call that is still hanging."""
        self._pool.shutdown(wait=False, cancel_futures=True)
