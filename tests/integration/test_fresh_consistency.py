"""Fresh features online and offline: served through the real app, equal to the lake's.

One small model is registered in a SQLite MLflow registry (once per module); each test
serves it from its own home with the real embedded event store (SQLite, the default
``event_store_url``). Store features come from an in-memory source (every feature
missing): Feast is exercised in ``test_feature_store.py`` and plays no part in the
fresh features.

* A small replay (two simulated days, 40 users, so users repeat and windows fill): the
  history day seeds the event state with ``record_interval``, the served day is
  replayed over HTTP through uvicorn, the offline job computes the same day from the
  lake, and ``check_consistency`` finds at least 99.5% of the rows identical.
* A hand-built history through the API: the logged fresh features equal the values
  worked out by hand (new device, foreign country, new merchant, previous-transaction
  gap, window edges, a retried transaction counted once).
* A broken event store (closed, or its file not a database) gives NaN fresh features
  and fallback rows, never a 500.
"""

from __future__ import annotations

import math
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from driftline.core.feature_spec import FRESH_FEATURES, SECONDS_SINCE_CAP
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.events import open_event_store, record_interval
from driftline.data.fresh import build_fresh_features
from driftline.data.predictions import read_predictions
from driftline.lifecycle import registry
from driftline.monitoring.consistency import check_consistency, compare
from driftline.monitoring.steps import consistency_entry
from driftline.serving import ModelProvider, create_app
from driftline.serving.fresh import EventState, event_of
from driftline.serving.lookup import EntityKey, FeatureRow, missing_row
from driftline.serving.replay import replay_day
from driftline.serving.schemas import Transaction
from driftline.simulator import SimulatorConfig
from tests.lakes import publish_days
from tests.registered import KEY, on_registry, register_models
from tests.servers import uvicorn_server

HISTORY_DAY, SERVED_DAY = date(2026, 1, 1), date(2026, 1, 2)
#: A few hundred transactions a day over a small population.
CONFIG = SimulatorConfig(rows_per_day=300, n_users=40, n_merchants=15, fraud_rate=0.03)


class NoFeatures:
    """A store-feature source that knows no user (every store feature missing)."""

    def fetch(self, entities: Sequence[EntityKey]) -> list[FeatureRow]:
        return [missing_row() for _ in entities]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A registry holding one small model, version 1."""
    return register_models(tmp_path_factory.mktemp("registry"), seeds=(0,))


@contextmanager
def serving(cfg: Settings, events: Callable[[], EventState] | None = None) -> Iterator[TestClient]:
    """The app on ``cfg`` with version 1 as champion, its lifespan running."""
    registry.set_alias(cfg, registry.CHAMPION, "1")
    app = create_app(cfg, features=NoFeatures(), models=ModelProvider(cfg), events=events)
    with TestClient(app) as client:
        app.state.service.models.refresh()
        yield client


def test_replayed_day_serves_the_fresh_features_the_offline_job_computes(
    settings: Settings, registered: Settings
) -> None:
    cfg = on_registry(settings, registered, data_start=HISTORY_DAY)
    publish_days(cfg, Interval.parse("2026-01-01", "2026-01-03"), CONFIG)
    seeded = record_interval(cfg, Interval.for_day(HISTORY_DAY))
    assert seeded > 200

    started = time.perf_counter()
    with serving(cfg) as client, uvicorn_server(client.app) as url:
        replayed = replay_day(
            SERVED_DAY, base_url=url, api_key=KEY["X-API-Key"], rate=0, config=CONFIG, batch_size=3
        )
    served_seconds = time.perf_counter() - started
    assert replayed.failed == {} and replayed.ok == replayed.sent > 200, replayed
    build_fresh_features(Interval.for_day(SERVED_DAY), cfg)

    result = check_consistency(cfg, SERVED_DAY)

    assert result.status == "ok", result
    assert result.rows == replayed.sent and result.skipped["fallback"] == 0, result
    assert result.share is not None and result.share >= 0.995, result.line()
    assert not result.flagged
    # The monitor's output for the day: the result and its one line, never raising.
    entry = consistency_entry(cfg, SERVED_DAY)
    assert entry["share"] == result.share and not entry["flagged"]
    assert entry["line"].startswith(f"fresh-feature consistency {SERVED_DAY}: {result.identical}/")
    logged = read_predictions(cfg, SERVED_DAY)
    # The windows filled: the values are not trivially equal (all zero or all missing).
    assert (logged["fresh_user_txn_count_24h"] >= 3).mean() > 0.5
    assert logged["fresh_user_device_new"].sum() > 0
    assert (logged["fresh_merchant_txn_count_1h"] > 0).mean() > 0.3
    assert logged[list(FRESH_FEATURES)].notna().all().all()
    assert served_seconds < 60


def _txn(i: str, at: datetime, **override: Any) -> dict[str, Any]:
    return {
        "transaction_id": i,
        "ts": at.isoformat(),
        "user_id": 7,
        "card_id": 1,
        "merchant_id": 1,
        "merchant_category": "electronics",
        "merchant_country": "DE",
        "amount": 10.0,
        "currency": "EUR",
        "channel": "online",
        "device_id": "phone",
    } | override


def _logged(cfg: Settings, day: date) -> dict[str, dict[str, Any]]:
    frame = read_predictions(cfg, day).drop_duplicates("transaction_id", keep="last")
    return {row["transaction_id"]: row for row in frame.to_dict("records")}


def test_request_time_features_of_a_hand_built_history_reach_the_log(
    settings: Settings, registered: Settings
) -> None:
    cfg = on_registry(settings, registered)
    t = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    history = [
        _txn("h-7d", t - timedelta(days=7), amount=500.0, device_id="tablet"),  # edge: out
        _txn("h-24h", t - timedelta(hours=24), amount=40.0),  # in 7 d, at the 24 h edge
        _txn("h-2h", t - timedelta(hours=2), merchant_id=2, amount=10.0),
        _txn("h-30m", t - timedelta(minutes=30), merchant_id=2, amount=30.0),
        _txn("h-5m", t - timedelta(minutes=5), amount=20.0),
    ]
    with serving(cfg) as client:
        for body in history:
            assert client.post("/v1/score", json=body, headers=KEY).status_code == 200
        # A retry of an earlier transaction is answered again but never counted twice.
        assert client.post("/v1/score", json=history[-1], headers=KEY).status_code == 200
        batch = [
            _txn(
                "x-new", t, merchant_id=3, merchant_country="FR", device_id="laptop", amount=100.0
            ),
            _txn("x-known", t + timedelta(seconds=90), amount=25.0),
            _txn("x-stranger", t, user_id=8, merchant_id=3),
        ]
        answer = client.post("/v1/score/batch", json={"transactions": batch}, headers=KEY)
    assert answer.status_code == 200
    assert not any(s["features_fallback"] for s in answer.json()["scores"])

    rows = _logged(cfg, t.date())
    new, known, stranger = rows["x-new"], rows["x-known"], rows["x-stranger"]
    # x-new: earlier in 7 d are h-24h, h-2h, h-30m, h-5m (h-7d is exactly 7 d before: out).
    assert {k: new[k] for k in FRESH_FEATURES} == {
        "fresh_user_txn_count_10m": 1.0,  # h-5m
        "fresh_user_txn_count_1h": 2.0,  # h-30m, h-5m
        "fresh_user_txn_count_24h": 3.0,  # h-24h is exactly 24 h before: out
        "fresh_user_amount_sum_1h": 50.0,
        "fresh_user_amount_sum_24h": 60.0,
        "fresh_user_distinct_merchants_1h": 2.0,
        "fresh_user_distinct_devices_24h": 1.0,
        "fresh_merchant_txn_count_1h": 0.0,  # merchant 3 has no earlier transaction
        "fresh_user_txn_count_7d": 4.0,
        "fresh_user_device_new": 1.0,  # laptop: never seen (the tablet was 7 d ago)
        "fresh_user_country_foreign": 1.0,  # FR, the user paid in DE only
        "fresh_user_merchant_new": 1.0,
        "fresh_user_amount_to_median_7d": 100.0 / 25.0,  # median of 40, 10, 30, 20
        "fresh_user_seconds_since_prev": 300.0,
    }
    # x-known, 90 s later: x-new (same batch, earlier) counts; device, country known.
    assert known["fresh_user_txn_count_10m"] == 2.0
    assert known["fresh_user_seconds_since_prev"] == 90.0
    assert known["fresh_user_device_new"] == 0.0  # phone is known
    assert known["fresh_user_country_foreign"] == 0.0
    assert known["fresh_user_merchant_new"] == 0.0
    assert known["fresh_user_txn_count_7d"] == 5.0
    assert known["fresh_merchant_txn_count_1h"] == 1.0  # h-5m at merchant 1
    # A user without history: the documented defaults. Merchant 3 saw x-new at the same
    # time, earlier in (ts, transaction_id) order ("x-new" < "x-stranger"): it counts.
    assert stranger["fresh_user_txn_count_7d"] == 0.0
    assert stranger["fresh_user_device_new"] == 0.0
    assert stranger["fresh_user_amount_to_median_7d"] == 1.0
    assert stranger["fresh_user_seconds_since_prev"] == SECONDS_SINCE_CAP
    assert stranger["fresh_merchant_txn_count_1h"] == 1.0
    # h-5m, sent twice, saw the same four earlier transactions both times (h-7d is
    # inside its own 7 days); the retry never counted itself or the first attempt.
    retried = read_predictions(cfg, t.date()).query("transaction_id == 'h-5m'")
    assert retried["fresh_user_txn_count_7d"].tolist() == [4.0, 4.0]


class Closed:
    """Opens the real SQLite event store and closes it at once (every call then fails)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def __call__(self) -> EventState:
        store = open_event_store(self.settings)
        store.close()
        return store


def _fallback_rows(client: TestClient) -> dict[str, float]:
    text = client.get("/metrics").text
    found: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(
            (
                "driftline_event_store_fallback_rows_total",
                "driftline_event_store_failures_total",
                "driftline_feature_fallback_total",
            )
        ):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


@pytest.mark.parametrize("broken", ["closed", "not_a_database", "locked"])
def test_a_broken_event_store_gives_nan_fresh_features_and_fallback_rows(
    settings: Settings, registered: Settings, broken: str
) -> None:
    # The shipped event-store limit (on_registry loosens it): "locked" must time out.
    cfg = on_registry(settings, registered, serve_breaker_failures=2, serve_event_timeout_ms=50)
    path = Path(cfg.home) / "events" / "events.db"
    events: Callable[[], EventState] | None = Closed(cfg) if broken == "closed" else None
    if broken == "not_a_database":  # the default opener, on a path SQLite cannot open
        path.mkdir(parents=True)
    blocker = None
    t = datetime(2026, 1, 10, 12, 0, tzinfo=UTC)
    with serving(cfg, events) as client:
        if broken == "locked":  # another process holds the write lock: every call is slow
            blocker = sqlite3.connect(path, isolation_level=None)
            blocker.execute("BEGIN IMMEDIATE")
        single = client.post("/v1/score", json=_txn("a", t), headers=KEY)
        batch = client.post(
            "/v1/score/batch",
            json={"transactions": [_txn("b", t), _txn("c", t, user_id=8)]},
            headers=KEY,
        )
        after = client.post("/v1/score", json=_txn("d", t), headers=KEY)  # breaker open
        counts = _fallback_rows(client)
        if blocker is not None:
            blocker.execute("ROLLBACK")
            blocker.close()

    assert [r.status_code for r in (single, batch, after)] == [200, 200, 200]
    scores = [single.json(), *batch.json()["scores"], after.json()]
    assert all(s["features_fallback"] for s in scores)
    rows = _logged(cfg, t.date())
    assert set(rows) == {"a", "b", "c", "d"}
    for row in rows.values():
        assert all(math.isnan(row[name]) for name in FRESH_FEATURES)
    assert [rows[i]["fresh_fallback"] for i in "abcd"] == ["store_failed"] * 3 + ["breaker_open"]
    assert counts['driftline_event_store_fallback_rows_total{reason="store_failed"}'] == 3
    assert counts['driftline_event_store_fallback_rows_total{reason="breaker_open"}'] == 1
    assert counts["driftline_feature_fallback_total"] == 4
    kind = "timeout" if broken == "locked" else "error"
    assert counts[f'driftline_event_store_failures_total{{reason="{kind}"}}'] == 2
    if broken == "locked":  # the call past its deadline still recorded "a" once unlocked
        store = open_event_store(cfg)
        assert store.record([event_of(Transaction(**_txn("a", t)))]) == 0
        store.close()


def _frame(rows: dict[str, dict[str, float]]) -> pd.DataFrame:
    """Rows of every fresh feature (0 unless given) by transaction id."""
    return pd.DataFrame(
        [{"transaction_id": i, **dict.fromkeys(FRESH_FEATURES, 0.0), **v} for i, v in rows.items()]
    )


def test_mismatches_are_explained_by_category() -> None:
    served = _frame(
        {
            "same": {"fresh_user_amount_sum_1h": 0.1 + 0.2, "fresh_user_device_new": math.nan},
            "late": {"fresh_user_txn_count_7d": 2.0},
            "extra": {"fresh_merchant_txn_count_1h": 3.0},
            "odd": {"fresh_user_amount_to_median_7d": 1.5},
            "gone": {},
        }
    )
    offline = _frame(
        {
            "same": {"fresh_user_amount_sum_1h": 0.3, "fresh_user_device_new": math.nan},
            "late": {"fresh_user_txn_count_7d": 3.0},
            "extra": {"fresh_merchant_txn_count_1h": 2.0},
            "odd": {"fresh_user_amount_to_median_7d": 1.5 + 1e-6},
        }
    )

    counts = compare(served, offline)

    assert (counts.rows, counts.identical) == (5, 1)
    assert {k: v["examples"] for k, v in counts.mismatches.items()} == {
        "missing_offline": ["gone"],
        "late_event": ["late"],
        "extra_online": ["extra"],
        "other": ["odd"],
    }
    assert counts.features["fresh_user_txn_count_7d"]["identical"] == 3  # late, gone differ
    assert counts.features["fresh_user_device_new"]["identical"] == 4  # NaN == NaN
