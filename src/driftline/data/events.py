"""The online event state of the fresh features (the speed layer's store).

Every scored transaction is recorded here, once by transaction id, and the scorer reads
back in the same call what :func:`driftline.core.fresh.fresh_features` needs: its user's
events of the last 7 days and its merchant's events of the last hour
(``FRESH_WINDOWS``). The ingest DAG seeds the state from the lake's validated
transactions of each data interval (:func:`record_interval`), so a scorer started on a
fresh state still sees the history.

Two engines behind one protocol, chosen by the setting ``event_store_url``:

- ``""`` (the local default): :class:`SQLiteEventStore`, an embedded SQLite file
  ``{home}/events/events.db`` in WAL mode. Every call is one ``BEGIN IMMEDIATE``
  transaction, so scorers in several processes never count an event twice.
- ``redis://host:port/db``: :class:`RedisEventStore`, Redis sorted sets per user and per
  merchant updated and read by one Lua script per call (one round trip, atomic across
  every scoring replica).

Both keep each entity's events of the retention (``FRESH_RETENTION``) before its newest
event; older ones are trimmed relative to that newest event, never by the wall clock, so
replaying a simulated past works like live traffic. An event whose transaction arrives
later than transactions after it (a late event) is still recorded: transactions scored
after it count it. Reads may return events later than the scored transaction and the
transaction itself; ``fresh_features`` keeps only the earlier ones.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Hashable, Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast, runtime_checkable
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.compute as pc

from driftline.core import lake
from driftline.core.feature_spec import FRESH_RETENTION, FRESH_WINDOWS
from driftline.core.fresh import Event, fresh_features
from driftline.core.interval import Interval
from driftline.core.schemas import TRANSACTIONS

if TYPE_CHECKING:
    from redis import Redis
    from redis.commands.core import Script

    from driftline.core.settings import Settings

_US = 1_000_000
#: Longest look-back of a read, per entity, in microseconds.
USER_WINDOW_US = int(FRESH_WINDOWS["user"].total_seconds() * _US)
MERCHANT_WINDOW_US = int(FRESH_WINDOWS["merchant"].total_seconds() * _US)
#: How much history each entity keeps before its newest event, in microseconds.
RETENTION_US = int(FRESH_RETENTION.total_seconds() * _US)
#: Events per SQLite transaction of a bulk :meth:`EventStore.record` (bounds how long it
#: holds the write lock that scorers wait for: ~10 ms).
RECORD_CHUNK = 1000
#: Events per script call of a bulk Redis record: Redis runs one script at a time, so
#: this bounds how long seeding blocks the scorers' calls (~15 µs an event: ~4 ms).
REDIS_RECORD_CHUNK = 250

#: One entry per transaction: (the user's events, the merchant's events).
History = tuple[list[Event], list[Event]]


@runtime_checkable
class EventStore(Protocol):
    """The event state: records transactions once and reads their entities' history."""

    def record_and_read(self, txns: Sequence[Event]) -> list[History]:
        """Record each of ``txns`` once by transaction id, in one atomic call.

        Returns:
            Per transaction, in order: the stored events of its user with
            ``ts`` in ``[t - 7 d, t]`` and of its merchant in ``[t - 1 h, t]``. They
            include every transaction recorded before or in this call (so the batch's
            own earlier transactions), possibly later ones and the transaction itself.
        """
        ...

    def record(self, events: Iterable[Event]) -> int:
        """Record ``events`` idempotently; returns how many were new."""
        ...

    def close(self) -> None:
        """Release the connection."""
        ...


def open_event_store(settings: Settings) -> EventStore:
    """The event state that ``settings.event_store_url`` names (see the module docstring).

    Raises:
        ValueError: The URL is neither empty nor ``redis://``/``rediss://``.
    """
    url = settings.event_store_url
    if not url:
        return SQLiteEventStore(Path(settings.home) / "events" / "events.db")
    if urlsplit(url).scheme in ("redis", "rediss"):
        return RedisEventStore(url, timeout_ms=settings.event_store_timeout_ms)
    raise ValueError(f"event_store_url must be empty or redis://host:port/db, got {url!r}")


def events_of(table: pa.Table) -> list[Event]:
    """The events of lake transaction rows (``TRANSACTIONS`` columns).

    ``ts`` becomes microseconds since the epoch (UTC); ``device_id`` and
    ``merchant_country`` (the event's ``country``) may be null.

    Raises:
        ValueError: A row has no amount (validated transactions always have one).
    """
    if table.num_rows == 0:
        return []
    if table["amount"].null_count:
        raise ValueError("transactions without an amount cannot be recorded")
    micros = pc.cast(pc.cast(table["ts"], TRANSACTIONS.field("ts").type), pa.int64())
    columns = zip(
        micros.to_pylist(),
        table["transaction_id"].to_pylist(),
        table["user_id"].to_pylist(),
        table["merchant_id"].to_pylist(),
        table["amount"].to_pylist(),
        table["device_id"].to_pylist(),
        table["merchant_country"].to_pylist(),
        strict=True,
    )
    return [Event(*row) for row in columns]


def record_interval(settings: Settings, interval: Interval) -> int:
    """Seed the event state with the lake's validated transactions of ``interval``.

    Reads the raw (validated) ``transactions`` partitions of the interval's days
    (missing days are skipped) and records them; rerunning records nothing twice.

    Returns:
        How many events were new to the state.
    """
    table = lake.read_partitions(
        settings.lake_uri, "raw", "transactions", interval.days(), TRANSACTIONS
    )
    store = open_event_store(settings)
    try:
        return store.record(events_of(table))
    finally:
        store.close()


def record_and_compute(store: EventStore, txns: Sequence[Event]) -> list[dict[str, float]]:
    """Record ``txns`` in one call and compute each one's fresh features from what it read.

    What the scoring service computes for one batch (:mod:`driftline.serving.fresh` makes
    the same single ``record_and_read`` call, then ``fresh_features`` per row), for
    callers that hold a store themselves (the serving benchmark, the tests). The store
    stays open.
    """
    histories = store.record_and_read(txns)
    return [
        fresh_features(txn, users, merchants)
        for txn, (users, merchants) in zip(txns, histories, strict=True)
    ]


def _chunks(events: Iterable[Event], size: int) -> Iterator[list[Event]]:
    chunk: list[Event] = []
    for event in events:
        chunk.append(event)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


class _EventCache(dict[Hashable, Event]):
    """Events already built, by a key that fixes their content (bounded, oldest dropped).

    Building an ``Event`` costs more than reading its row, and a transaction's user
    history is read again by every later transaction of the user: keeping the objects
    halves the cost of a batch. A key is only ever filled from what the store holds, so
    a hit equals a fresh read.
    """

    def __init__(self, limit: int = 200_000) -> None:
        super().__init__()
        self._limit = limit

    def put(self, key: Hashable, event: Event) -> None:
        """Keep ``event`` under ``key``; drop the older half first when full."""
        if len(self) >= self._limit:
            for old in list(islice(self, self._limit // 2)):
                self.pop(old, None)  # another thread may have dropped it already
        self[key] = event


# ---------------------------------------------------------------------------------------
# Embedded: SQLite
# ---------------------------------------------------------------------------------------

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    entity TEXT NOT NULL,
    key INTEGER NOT NULL,
    transaction_id TEXT NOT NULL,
    ts_us INTEGER NOT NULL,
    user_id INTEGER NOT NULL,
    merchant_id INTEGER NOT NULL,
    amount REAL NOT NULL,
    device_id TEXT,
    country TEXT,
    PRIMARY KEY (entity, key, ts_us, transaction_id)
) WITHOUT ROWID;
CREATE UNIQUE INDEX IF NOT EXISTS events_once ON events (entity, key, transaction_id);
"""
_COLUMNS = "ts_us, transaction_id, user_id, merchant_id, amount, device_id, country"
_INSERT = (
    f"INSERT OR IGNORE INTO events (entity, key, {_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_RANGE = "FROM events WHERE entity = ? AND key = ? AND ts_us BETWEEN ? AND ?"
_READ_IDS = f"SELECT transaction_id {_RANGE}"
_READ = f"SELECT {_COLUMNS} {_RANGE}"
# Relative to the entity's newest event (an index seek), never to the wall clock.
_TRIM = (
    "DELETE FROM events WHERE entity = ?1 AND key = ?2 AND ts_us < "
    "(SELECT MAX(ts_us) FROM events WHERE entity = ?1 AND key = ?2) - ?3"
)


def _rows(events: Sequence[Event], entity: str) -> list[tuple[object, ...]]:
    key = "user_id" if entity == "user" else "merchant_id"
    return [
        (
            entity,
            getattr(e, key),
            e.ts_us,
            e.transaction_id,
            e.user_id,
            e.merchant_id,
            e.amount,
            e.device_id,
            e.country,
        )
        for e in events
    ]


class SQLiteEventStore:
    """The embedded event state: one SQLite file in WAL mode, safe across processes.

    Each event is stored once per entity (a user row and a merchant row) under the key
    ``(entity, key, transaction_id)`` with ``INSERT OR IGNORE``, so a replayed id is
    kept once. Every call runs in one ``BEGIN IMMEDIATE`` transaction: the write lock is
    taken before anything is read, so two processes recording the same id serialize
    and exactly one of them inserts it. One connection per store, shared by threads
    under a lock.
    """

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        """Open (and create) the state file at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._cache = _EventCache()
        self._db = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL: durable across process crashes, a transaction per call stays cheap.
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            for statement in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(statement)

    def _transaction(self) -> _Immediate:
        return _Immediate(self._db)

    def _insert(self, events: Sequence[Event]) -> int:
        """Insert both rows of each event; returns how many events were new."""
        new = self._db.executemany(_INSERT, _rows(events, "user")).rowcount
        self._db.executemany(_INSERT, _rows(events, "merchant"))
        return new

    def _insert_each(self, events: Sequence[Event]) -> None:
        """:meth:`_insert`, remembering each event that was new (its row is itself)."""
        for event, row in zip(events, _rows(events, "user"), strict=True):
            if self._db.execute(_INSERT, row).rowcount:
                self._cache.put(event.transaction_id, event)
        self._db.executemany(_INSERT, _rows(events, "merchant"))

    def _trim(self, events: Sequence[Event]) -> None:
        keys = {("user", e.user_id) for e in events} | {("merchant", e.merchant_id) for e in events}
        self._db.executemany(_TRIM, [(entity, key, RETENTION_US) for entity, key in keys])

    def _read(self, entity: str, key: int, ts_us: int, window_us: int) -> list[Event]:
        """The entity's events in ``[ts - window, ts]``: ids first, rows only on a miss."""
        bounds = (entity, key, ts_us - window_us, ts_us)
        get = self._cache.get
        cached = [get(i) for (i,) in self._db.execute(_READ_IDS, bounds)]
        if all(cached):  # no None (an Event is always true); `in` would call __eq__
            return cast(list[Event], cached)
        events = [Event(*row) for row in self._db.execute(_READ, bounds)]
        for event in events:
            self._cache.put(event.transaction_id, event)
        return events

    def record_and_read(self, txns: Sequence[Event]) -> list[History]:
        """See :meth:`EventStore.record_and_read`; one SQLite transaction per call."""
        if not txns:
            return []
        with self._lock, self._transaction():
            self._insert_each(txns)
            histories = [
                (
                    self._read("user", t.user_id, t.ts_us, USER_WINDOW_US),
                    self._read("merchant", t.merchant_id, t.ts_us, MERCHANT_WINDOW_US),
                )
                for t in txns
            ]
            # After the reads: a batch's earlier transactions keep their whole windows.
            self._trim(txns)
            return histories

    def record(self, events: Iterable[Event]) -> int:
        """See :meth:`EventStore.record`; one SQLite transaction per ``RECORD_CHUNK``."""
        new = 0
        for chunk in _chunks(events, RECORD_CHUNK):
            with self._lock, self._transaction():
                new += self._insert(chunk)
                self._trim(chunk)
        return new

    def close(self) -> None:
        """Close the connection."""
        with self._lock:
            self._db.close()


class _Immediate:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on an error) on ``db``."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        self._db.execute("COMMIT" if kind is None else "ROLLBACK")


# ---------------------------------------------------------------------------------------
# Production: Redis
# ---------------------------------------------------------------------------------------

#: How long a transaction id is remembered (longer than the retention: a replay of an
#: event older than every window is refused too).
SEEN_TTL_S = int(FRESH_RETENTION.total_seconds()) + 86_400

# KEYS: per transaction seen, user set, merchant set. ARGV: retention, seen TTL, read
# flag, then per transaction: score, member, user window start, merchant window start.
# Record, read, then trim (after the reads, so a batch's earlier transactions keep their
# whole windows).
# Scores and bounds travel as decimal strings: Lua numbers print with 14 digits, too
# few for microseconds since the epoch.
_LUA = """
local retention = tonumber(ARGV[1])
local ttl = ARGV[2]
local read = ARGV[3] == '1'
local n = #KEYS / 3
local new = 0
local touched = {}
for i = 1, n do
  local seen, user, merchant = KEYS[3 * i - 2], KEYS[3 * i - 1], KEYS[3 * i]
  local score, member = ARGV[4 * i], ARGV[4 * i + 1]
  if redis.call('SET', seen, '1', 'NX', 'EX', ttl) then
    new = new + 1
    redis.call('ZADD', user, score, member)
    redis.call('ZADD', merchant, score, member)
    touched[user] = true
    touched[merchant] = true
  end
end
local out = {new}
if read then
  for i = 1, n do
    local score = ARGV[4 * i]
    out[2 * i] = redis.call('ZRANGEBYSCORE', KEYS[3 * i - 1], ARGV[4 * i + 2], score)
    out[2 * i + 1] = redis.call('ZRANGEBYSCORE', KEYS[3 * i], ARGV[4 * i + 3], score)
  end
end
for key in pairs(touched) do
  local newest = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')[2]
  local cutoff = string.format('%.0f', tonumber(newest) - retention)
  redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. cutoff)
end
return out
"""


def _member(event: Event) -> str:
    """The event as a compact JSON array (includes the id, so members are unique)."""
    fields = [
        event.ts_us,
        event.transaction_id,
        event.user_id,
        event.merchant_id,
        event.amount,
        event.device_id,
        event.country,
    ]
    return json.dumps(fields, separators=(",", ":"))


def _event(member: bytes) -> Event:
    ts_us, transaction_id, user_id, merchant_id, amount, device_id, country = json.loads(member)
    return Event(ts_us, transaction_id, user_id, merchant_id, float(amount), device_id, country)


def _decode(members: list[bytes], cache: _EventCache) -> list[Event]:
    """The events of sorted-set members (a member's bytes fix its event)."""
    events = []
    for member in members:
        event = cache.get(member)
        if event is None:
            event = _event(member)
            cache.put(member, event)
        events.append(event)
    return events


class RedisEventStore:
    """The production event state: Redis sorted sets updated by one Lua script per call.

    Keys: ``dl:seen:<id>`` (the id was recorded; expires after ``SEEN_TTL_S``),
    ``dl:u:<user>`` and ``dl:m:<merchant>`` (the entity's events, score ``ts_us``,
    member the event's JSON). The script (loaded once, then called by ``EVALSHA``)
    records each new id, reads the windows and then trims every touched set to the
    retention before its newest score, all in one round trip that Redis runs
    atomically, so replicas scoring at once never count an event twice.
    """

    def __init__(self, url: str, timeout_ms: int = 50) -> None:
        """Connect to ``url`` (``redis://host:port/db``) with short timeouts."""
        from redis import Redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        timeout = timeout_ms / 1000
        # One immediate retry (a pooled connection that a Redis restart broke reconnects;
        # a retried call is safe: ids are recorded once), not the client's default of
        # three with backoff of seconds, which would hold a scorer far past its timeout.
        self._client: Redis = Redis.from_url(
            url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 1),
        )
        self._script: Script = self._client.register_script(_LUA)
        self._cache = _EventCache()

    def _call(self, events: Sequence[Event], read: bool) -> list[Any]:
        keys: list[str] = []
        args: list[str | int] = [RETENTION_US, SEEN_TTL_S, "1" if read else "0"]
        for e in events:
            keys += [f"dl:seen:{e.transaction_id}", f"dl:u:{e.user_id}", f"dl:m:{e.merchant_id}"]
            args += [
                str(e.ts_us),
                _member(e),
                str(e.ts_us - USER_WINDOW_US),
                str(e.ts_us - MERCHANT_WINDOW_US),
            ]
        reply = self._script(keys=keys, args=args)
        if not isinstance(reply, list):
            raise TypeError(f"unexpected reply of the event script: {type(reply).__name__}")
        return reply

    def record_and_read(self, txns: Sequence[Event]) -> list[History]:
        """See :meth:`EventStore.record_and_read`; one script call per call."""
        if not txns:
            return []
        reply = self._call(txns, read=True)
        cache = self._cache
        return [
            (_decode(reply[2 * i + 1], cache), _decode(reply[2 * i + 2], cache))
            for i in range(len(txns))
        ]

    def record(self, events: Iterable[Event]) -> int:
        """See :meth:`EventStore.record`; one script call per ``REDIS_RECORD_CHUNK``."""
        new = 0
        for chunk in _chunks(events, REDIS_RECORD_CHUNK):
            new += int(self._call(chunk, read=False)[0])
        return new

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
