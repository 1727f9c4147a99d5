"""The online event state (``driftline.data.events``) on both engines: the embedded SQLite
file and a real ``redis-server`` (started per module; ``make redis-server`` installs it).

Every case runs on both: what a scorer reads is what ``fresh_features`` needs, a replayed
id counts once, a late event counts for what is scored after it, two processes recording
overlapping events at once store each id exactly once, and trimming keeps the windows
exact.
"""

from __future__ import annotations

import multiprocessing
import random
import shutil
import sqlite3
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import date, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pyarrow as pa
import pytest

from driftline.core import lake
from driftline.core.fresh import Event, fresh_features
from driftline.core.interval import Interval
from driftline.core.schemas import TRANSACTIONS
from driftline.core.settings import Settings
from driftline.data.events import (
    RETENTION_US,
    RedisEventStore,
    SQLiteEventStore,
    events_of,
    open_event_store,
    record_and_compute,
    record_interval,
)
from driftline.simulator import SimulatorConfig, simulate_transactions
from tests.servers import redis_server

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

US = 1_000_000
MINUTE, HOUR, DAY = 60 * US, 3600 * US, 86_400 * US
#: 2026-01-05 00:00 UTC, microseconds.
T0 = 1_767_571_200 * US
DAYS = [date(2026, 1, 1) + timedelta(days=i) for i in range(3)]


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One real redis-server for the module (no persistence)."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (make redis-server)")
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(params=["sqlite", "redis"])
def store_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """Settings of an empty event state on each engine."""
    url = ""
    if request.param == "redis":
        from redis import Redis

        url = request.getfixturevalue("redis_url")
        client = Redis.from_url(url)
        client.flushdb()
        client.close()
    return Settings(home=tmp_path / "state", event_store_url=url)


def stored_ids(settings: Settings) -> dict[tuple[str, int], list[str]]:
    """Every stored transaction id per (entity, key), read from the engine itself."""
    ids: dict[tuple[str, int], list[str]] = {}
    if not settings.event_store_url:
        path = Path(settings.home) / "events" / "events.db"
        with sqlite3.connect(path) as db:
            rows = db.execute("SELECT entity, key, transaction_id FROM events").fetchall()
        for entity, key, transaction_id in rows:
            ids.setdefault((entity, key), []).append(transaction_id)
        return ids
    import json

    from redis import Redis

    client = Redis.from_url(settings.event_store_url)
    for name in client.scan_iter(match="dl:[um]:*"):
        prefix, key = name.decode().split(":")[1:]
        entity = "user" if prefix == "u" else "merchant"
        ids[(entity, int(key))] = [json.loads(m)[1] for m in client.zrange(name, 0, -1)]
    client.close()
    return ids


def expected_features(txn: Event, history: Sequence[Event]) -> dict[str, float]:
    """The features of ``txn`` computed from the full list of events (the reference)."""
    user = [e for e in history if e.user_id == txn.user_id]
    merchant = [e for e in history if e.merchant_id == txn.merchant_id]
    return fresh_features(txn, user, merchant)


def served_features(store_settings: Settings, txns: Sequence[Event]) -> list[dict[str, float]]:
    """Record ``txns`` in one call and compute their features from what it returns."""
    store = open_event_store(store_settings)
    try:
        return record_and_compute(store, txns)
    finally:
        store.close()


def stream(n: int, users: int, merchants: int, span_us: int, seed: int) -> list[Event]:
    """``n`` events in time order over ``span_us`` (some at the same microsecond)."""
    rng = random.Random(seed)
    times = sorted(T0 + rng.randrange(span_us) for _ in range(n))
    times[5] = times[4]  # two events of the stream at the same time
    return [
        Event(
            ts,
            f"t{i:05d}",
            rng.randrange(users),
            rng.randrange(merchants),
            round(rng.uniform(1, 300), 2),
            rng.choice(["d1", "d2", "d3", None]),
            rng.choice(["DE", "FR", "NG", None]),
        )
        for i, ts in enumerate(times)
    ]


def test_the_store_follows_the_setting(tmp_path: Path) -> None:
    store = open_event_store(Settings(home=tmp_path))
    assert isinstance(store, SQLiteEventStore)
    assert store.path == tmp_path.resolve() / "events" / "events.db"
    store.close()
    with pytest.raises(ValueError, match="redis://"):
        open_event_store(Settings(home=tmp_path, event_store_url="memcached://x:1"))


def test_events_of_lake_rows() -> None:
    table = pa.table(
        {
            "transaction_id": ["a", "b"],
            "ts": pa.array([T0, T0 + 1], pa.timestamp("us", tz="UTC")),
            "user_id": [1, 2],
            "card_id": [1, 2],
            "merchant_id": [10, 11],
            "merchant_category": ["fuel", None],
            "merchant_country": ["DE", None],
            "amount": [12.5, 3.0],
            "currency": ["EUR", "EUR"],
            "channel": ["pos", "online"],
            "device_id": [None, "d2"],
        },
        schema=TRANSACTIONS,
    )
    assert events_of(table) == [
        Event(T0, "a", 1, 10, 12.5, None, "DE"),
        Event(T0 + 1, "b", 2, 11, 3.0, "d2", None),
    ]
    assert events_of(TRANSACTIONS.empty_table()) == []


def test_record_and_read_returns_what_fresh_features_needs(store_settings: Settings) -> None:
    """Seeded from the lake, then scored in batches: features as from the full list."""
    config = SimulatorConfig(rows_per_day=300, n_users=30, n_merchants=5, anchor=DAYS[0])
    tables = [simulate_transactions(config, day)[0] for day in DAYS]
    for day, table in zip(DAYS[:2], tables, strict=False):
        lake.replace_partition(store_settings.lake_uri, "raw", "transactions", day, table)
    seeded = record_interval(store_settings, Interval(DAYS[0], DAYS[2]))
    assert seeded == tables[0].num_rows + tables[1].num_rows
    assert record_interval(store_settings, Interval(DAYS[0], DAYS[2])) == 0  # idempotent

    history = events_of(pa.concat_tables(tables))
    scored = sorted(events_of(tables[2]), key=lambda e: (e.ts_us, e.transaction_id))
    served: list[dict[str, float]] = []
    position = 0
    for size in (1, 7, 50, 100, 1, 1000):
        served += served_features(store_settings, scored[position : position + size])
        position += size
    assert position >= len(scored) > 200
    expected = [expected_features(t, history) for t in scored]
    assert served == expected
    # The batches saw history: user velocity, merchant windows and known devices.
    assert sum(f["fresh_user_txn_count_24h"] for f in served) > len(scored)
    assert sum(f["fresh_merchant_txn_count_1h"] for f in served) > len(scored)
    assert 0 < sum(f["fresh_user_device_new"] for f in served) < len(scored)


def test_a_replayed_transaction_id_is_not_counted_twice(store_settings: Settings) -> None:
    first = Event(T0, "a", 1, 10, 20.0, "d1", "DE")
    store = open_event_store(store_settings)
    try:
        assert store.record([first]) == 1
        assert store.record([first, first]) == 0
        # A replay with other content (same id): the first content stays, once.
        ((user, merchant),) = store.record_and_read([replace(first, amount=999.0)])
        assert user == [first] and merchant == [first]
        later = Event(T0 + MINUTE, "b", 1, 10, 5.0, "d1", "DE")
        (user, _), (again, _) = store.record_and_read([later, later])
        assert (
            sorted(user, key=lambda e: e.ts_us)
            == [first, later]
            == sorted(again, key=lambda e: e.ts_us)
        )
    finally:
        store.close()
    features = fresh_features(later, user, [])
    assert features["fresh_user_txn_count_10m"] == 1
    assert features["fresh_user_amount_sum_1h"] == 20.0
    assert stored_ids(store_settings) == {("user", 1): ["a", "b"], ("merchant", 10): ["a", "b"]}


def test_a_late_event_counts_for_transactions_scored_after_it(store_settings: Settings) -> None:
    on_time = Event(T0, "b", 1, 10, 10.0, "d1", "DE")
    late = Event(T0 - 5 * MINUTE, "a", 1, 10, 40.0, "d9", "FR")  # arrives after "b"
    after = Event(T0 + MINUTE, "c", 1, 10, 1.0, "d9", "FR")
    (first,) = served_features(store_settings, [on_time])
    (late_served,) = served_features(store_settings, [late])
    (then,) = served_features(store_settings, [after])
    assert first["fresh_user_txn_count_10m"] == 0  # scored before "a" arrived
    assert late_served["fresh_user_txn_count_10m"] == 0  # "b" is later than "a"
    assert then == expected_features(after, [on_time, late])
    assert then["fresh_user_txn_count_10m"] == 2
    assert then["fresh_merchant_txn_count_1h"] == 2
    assert then["fresh_user_device_new"] == 0  # "d9" came with the late event


def _record_worker(settings: Settings, events: list[Event], start: Barrier) -> None:
    """Record ``events`` in small batches, alternating ``record_and_read`` and ``record``."""
    store = open_event_store(settings)
    start.wait(timeout=60)
    for index in range(0, len(events), 8):
        batch = events[index : index + 8]
        if index % 16:
            store.record(batch)
        else:
            store.record_and_read(batch)
    store.close()


def test_concurrent_updates_from_two_processes_count_each_id_once(
    store_settings: Settings,
) -> None:
    events = stream(600, users=12, merchants=4, span_us=2 * DAY, seed=11)
    # The two processes overlap on 200 ids, sent by the second with another amount
    # (a replay) and in reverse order, so both race to record the same ids.
    one = events[:400]
    two = [replace(e, amount=e.amount + 1) if e in one else e for e in reversed(events[200:])]
    two += one[:40]
    open_event_store(store_settings).close()  # the schema exists before the race
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [
        context.Process(target=_record_worker, args=(store_settings, part, start))
        for part in (one, two)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0

    stored = stored_ids(store_settings)
    for key, ids in stored.items():
        assert len(ids) == len(set(ids)), f"an id stored twice under {key}"
    expected: dict[tuple[str, int], list[str]] = {}
    for e in events:
        expected.setdefault(("user", e.user_id), []).append(e.transaction_id)
        expected.setdefault(("merchant", e.merchant_id), []).append(e.transaction_id)
    assert {k: sorted(v) for k, v in stored.items()} == expected
    # Each id kept one content (the first recorded), and nothing is new any more.
    store = open_event_store(store_settings)
    try:
        assert store.record(events) == 0
        probe = Event(T0 + 3 * DAY, "zz", 0, 0, 1.0, None, None)
        ((user, _),) = store.record_and_read([probe])
    finally:
        store.close()
    amounts = {e.transaction_id: e.amount for e in user}
    assert len(amounts) == len(user) == Counter(e.user_id for e in events)[0] + 1
    for e in events:
        if e.user_id == 0:
            assert amounts[e.transaction_id] in (e.amount, e.amount + 1)


def test_trimming_keeps_the_windows_exact(store_settings: Settings) -> None:
    """Three weeks of two users, scored in order: features exact, old events trimmed."""
    events = stream(400, users=2, merchants=2, span_us=21 * DAY, seed=5)
    served: list[dict[str, float]] = []
    for index in range(0, len(events), 5):
        served += served_features(store_settings, events[index : index + 5])
    assert served == [expected_features(t, events) for t in events]

    stored = stored_ids(store_settings)
    newest: dict[tuple[str, int], int] = {}
    for e in events:
        for key in (("user", e.user_id), ("merchant", e.merchant_id)):
            newest[key] = max(newest.get(key, 0), e.ts_us)
    by_id = {e.transaction_id: e for e in events}
    for key, ids in stored.items():
        kept = {by_id[i].transaction_id for i in ids}
        keep = {
            e.transaction_id
            for e in events
            if (e.user_id if key[0] == "user" else e.merchant_id) == key[1]
            and e.ts_us >= newest[key] - RETENTION_US
        }
        assert kept == keep, f"{key} keeps exactly the retention before its newest event"
    assert sum(len(ids) for ids in stored.values()) < len(events)  # 2 rows per event

    # A replay older than the retention is not kept (nor counted again).
    store = open_event_store(store_settings)
    try:
        store.record([events[0]])
    finally:
        store.close()
    assert stored_ids(store_settings) == stored


def test_a_redis_store_times_out_fast(tmp_path: Path) -> None:
    """An unreachable Redis fails within its short timeout instead of hanging a scorer."""
    import time

    from redis.exceptions import ConnectionError as RedisConnectionError

    store = RedisEventStore("redis://127.0.0.1:9/0", timeout_ms=50)  # the discard port
    started = time.monotonic()
    with pytest.raises((RedisConnectionError, OSError)):
        store.record_and_read([Event(T0, "a", 1, 10, 1.0, None, None)])
    assert time.monotonic() - started < 5.0
    store.close()
