"""The scoring service end to end: FastAPI TestClient over a real MLflow registry.

Two small models are trained on synthetic frames and registered through
``driftline.lifecycle.registry`` on SQLite (once per module; each test points the
aliases where it needs them and writes its prediction log under its own home).
Online features come from :class:`DictFeatures`, an in-memory ``FeatureSource``: the
real Feast online store is exercised in ``test_feature_store.py``; here one test runs
the Feast-backed source against an unapplied store to show the fallback on a real
failure.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from datetime import date
from typing import Any

import pytest
from fastapi.testclient import TestClient

from driftline.core.columns import MODEL_INPUTS, STORE_NUMERIC
from driftline.core.settings import Settings
from driftline.data.predictions import logged_days
from driftline.lifecycle import promotion, registry
from driftline.serving import FeatureSource, ModelProvider, create_app, read_predictions
from driftline.serving.api import Service
from driftline.serving.lookup import FeatureRow, missing_row
from driftline.training import packaging
from tests.frames import model_frame
from tests.registered import on_registry, register_models

KEY = {"X-API-Key": "driftline-dev-key"}
DAY = date(2026, 1, 10)


def txn(i: int, user: int = 1, merchant: int = 1, **override: Any) -> dict[str, Any]:
    """A valid transaction payload on :data:`DAY`."""
    return {
        "transaction_id": f"tx-{i}",
        "ts": "2026-01-10T14:30:00+00:00",
        "user_id": user,
        "card_id": 1,
        "merchant_id": merchant,
        "merchant_category": "electronics",
        "merchant_country": "DE",
        "amount": 420.5,
        "currency": "EUR",
        "channel": "online",
        "device_id": "device-1",
    } | override


class DictFeatures:
    """In-memory :class:`FeatureSource` that can fail or be slow on demand."""

    def __init__(self, users: dict[int, FeatureRow] | None = None) -> None:
        self.users = users or {}
        self.fail = False
        self.delay = 0.0
        self.calls = 0

    def fetch(self, entities: Sequence[tuple[int, int]]) -> list[FeatureRow]:
        self.calls += 1
        if self.delay:
            time.sleep(self.delay)
        if self.fail:
            raise ConnectionError("online store unreachable")
        return [{**missing_row(), **self.users.get(user, {})} for user, _ in entities]


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A registry holding versions 1 and 2 (different seeds) of the model."""
    return register_models(tmp_path_factory.mktemp("registry"), seeds=(0, 1))


def point(cfg: Settings, champion: str | None, canary: str | None = None) -> None:
    """Point (or remove) the serving aliases; forget any canary control (a fresh start)."""
    promotion.clear_canary_control(cfg)
    client = registry.client(cfg)
    for alias, version in (("champion", champion), ("canary", canary)):
        if version is None:
            if registry.version_by_alias(cfg, alias) is not None:
                client.delete_registered_model_alias(cfg.model_name, alias)
        else:
            registry.set_alias(cfg, alias, version)


_LOADED: dict[str, Any] = {}


def cached_load(cfg: Settings) -> Callable[[str], Any]:
    """The real registry loader, memoised across tests (loading a pyfunc takes seconds)."""

    def load(version: str) -> Any:
        if version not in _LOADED:
            _LOADED[version] = packaging.load_version(cfg, version)
        return _LOADED[version]

    return load


@pytest.fixture
def serve(
    settings: Settings, registered: Settings
) -> Iterator[Callable[..., tuple[TestClient, Service]]]:
    """Start an app on the shared registry with this test's home; returns a factory."""
    with ExitStack() as stack:

        def start(
            features: FeatureSource | None = None,
            *,
            feast: bool = False,
            cache: bool = True,
            load: Callable[[str], Any] | None = None,
            clock: Callable[[], float] | None = None,
            **overrides: Any,
        ) -> tuple[TestClient, Service]:
            cfg = on_registry(settings, registered, **overrides)  # tests refresh by hand
            models = ModelProvider(cfg, load=load or (cached_load(cfg) if cache else None))
            if not feast and features is None:
                features = DictFeatures()
            app = create_app(cfg, features=features, models=models, clock=clock or FakeClock())
            client = stack.enter_context(TestClient(app))
            service: Service = app.state.service
            service.models.refresh()
            return client, service

        yield start


def test_scores_single_and_batch_and_logs_exactly_those(
    serve: Callable[..., tuple[TestClient, Service]], registered: Settings, settings: Settings
) -> None:
    point(registered, champion="1")
    client, _ = serve()

    one = client.post("/v1/score", json=txn(0), headers=KEY)
    batch = client.post(
        "/v1/score/batch", json={"transactions": [txn(i, user=i) for i in (1, 2, 3)]}, headers=KEY
    )
    again = client.post("/v1/score", json=txn(0), headers=KEY)

    assert one.status_code == batch.status_code == again.status_code == 200, batch.text
    results = [one.json(), *batch.json()["scores"], again.json()]
    for result in results:
        assert 0.0 <= result["score"] <= 1.0
        assert result["model_version"] == "1"
        assert result["variant"] == "champion"
        assert result["decision"] == ("decline" if result["score"] >= 0.5 else "approve")
        assert result["features_fallback"] is False
    assert one.json() == again.json()
    logged = read_predictions(settings, DAY)
    assert logged["transaction_id"].tolist() == ["tx-0", "tx-1", "tx-2", "tx-3", "tx-0"]
    assert logged["score"].tolist() == [r["score"] for r in results]
    assert set(MODEL_INPUTS) <= set(logged.columns)
    assert logged.loc[0, "hour_of_day"] == 14.0
    assert {"latency_ms", "variant", "model_version", "features_fallback", "ts"} <= set(logged)


def test_canary_split_is_deterministic_by_user(
    serve: Callable[..., tuple[TestClient, Service]], registered: Settings
) -> None:
    point(registered, champion="1", canary="2")
    client, _ = serve(serve_canary_weight=0.3)

    def variants(users: range) -> dict[int, str]:
        found: dict[int, str] = {}
        for start in range(users.start, users.stop, 250):
            chunk = [txn(u, user=u) for u in range(start, min(start + 250, users.stop))]
            reply = client.post("/v1/score/batch", json={"transactions": chunk}, headers=KEY)
            assert reply.status_code == 200, reply.text
            for t, r in zip(chunk, reply.json()["scores"], strict=True):
                found[t["user_id"]] = r["variant"]
                assert r["model_version"] == {"champion": "1", "canary": "2"}[r["variant"]]
        return found

    first = variants(range(1, 2001))
    share = sum(v == "canary" for v in first.values()) / len(first)
    assert 0.26 <= share <= 0.34
    assert variants(range(1, 501)) == {u: first[u] for u in range(1, 501)}

    assert client.put("/admin/canary-weight", json={"weight": 0.0}, headers=KEY).status_code == 200
    assert set(variants(range(1, 301)).values()) == {"champion"}


def test_feature_store_failure_falls_back_and_opens_the_breaker(
    serve: Callable[..., tuple[TestClient, Service]], registered: Settings, settings: Settings
) -> None:
    point(registered, champion="1")
    known = model_frame(n=1, seed=3).iloc[0]
    store = DictFeatures({7: {name: float(known[name]) for name in STORE_NUMERIC}})
    clock = FakeClock()
    client, service = serve(
        store, clock=clock, serve_breaker_failures=2, serve_breaker_reset_seconds=10.0
    )

    def score(i: int, user: int) -> dict[str, Any]:
        reply = client.post("/v1/score", json=txn(i, user=user), headers=KEY)
        assert reply.status_code == 200, reply.text
        result: dict[str, Any] = reply.json()
        return result

    healthy = score(0, user=7)
    store.fail = True
    # User 7's later requests retry tx-0: the same transaction has the same fresh
    # features (its earlier events), so only the store features could change its score.
    cached = score(0, user=7)  # failure 1: last known features of user 7
    unknown = score(2, user=99)  # failure 2: nothing known, features missing; breaker opens
    calls = store.calls
    skipped = score(0, user=7)  # open: the store is not called at all
    assert store.calls == calls
    assert service.scorer.features.breaker.state == "open"

    assert healthy["features_fallback"] is False
    assert (
        cached["features_fallback"]
        and unknown["features_fallback"]
        and skipped["features_fallback"]
    )
    assert cached["score"] == healthy["score"] == skipped["score"]
    logged = read_predictions(settings, DAY)
    assert math.isnan(logged.set_index("transaction_id").loc["tx-2", "user_txn_count_1h"])
    assert logged.query("transaction_id == 'tx-0'")["user_txn_count_1h"].nunique() == 1
    metrics = client.get("/metrics").text
    assert "driftline_feature_fallback_total 3.0" in metrics
    assert "driftline_feature_breaker_state 1.0" in metrics

    store.fail = False
    clock.now += 10.0  # half-open: one trial call, which succeeds and closes
    assert score(4, user=7)["features_fallback"] is False
    assert service.scorer.features.breaker.state == "closed"

    store.delay = 0.3  # slower than the 50 ms timeout
    assert score(5, user=7)["features_fallback"] is True


def test_feast_source_on_an_unapplied_store_falls_back(
    serve: Callable[..., tuple[TestClient, Service]], registered: Settings
) -> None:
    point(registered, champion="1")
    # A generous timeout, so the fallback comes from Feast's own error, not a timeout.
    client, _ = serve(feast=True, serve_feature_timeout_ms=60_000)
    reply = client.post("/v1/score", json=txn(0), headers=KEY)
    assert reply.status_code == 200, reply.text
    assert reply.json()["features_fallback"] is True


def test_alias_moved_during_requests_never_fails_one(
    serve: Callable[..., tuple[TestClient, Service]], registered: Settings
) -> None:
    point(registered, champion="1")
    client, service = serve()
    cached_load(registered)("2")  # load outside the timed window
    replies: list[tuple[int, str]] = []
    lock = threading.Lock()
    go = threading.Event()

    def fire(worker: int) -> None:
        go.wait()
        for i in range(15):
            reply = client.post("/v1/score", json=txn(worker * 100 + i, user=i + 1), headers=KEY)
            body = reply.json()
            with lock:
                replies.append((reply.status_code, body.get("model_version", body)))

    threads = [threading.Thread(target=fire, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    go.set()
    deadline = time.monotonic() + 30.0
    while len(replies) < 8 and time.monotonic() < deadline:  # swap mid-stream
        time.sleep(0.005)
    point(registered, champion="2")
    service.models.refresh()
    for thread in threads:
        thread.join()

    assert len(replies) == 60
    assert {status for status, _ in replies} == {200}
    versions = [version for _, version in replies]
    assert "1" in versions and set(versions) <= {"1", "2"}
    assert client.post("/v1/score", json=txn(999), headers=KEY).json()["model_version"] == "2"


class Broken:
    """A pyfunc whose predictions always fail."""

    def predict(self, frame: Any) -> Any:
        raise RuntimeError("corrupt weights")


def test_failed_load_keeps_the_old_model_and_a_failing_canary_falls_back(
    serve: Callable[..., tuple[TestClient, Service]], registered: Settings
) -> None:
    point(registered, champion="1")
    real = cached_load(registered)
    broken = {"load": False}

    def load(version: str) -> Any:
        if version == "2" and broken["load"]:
            raise OSError("artifact store unreachable")
        return Broken() if version == "2" else real(version)

    client, service = serve(load=load, serve_canary_weight=1.0)
    point(registered, champion="1", canary="2")
    service.models.refresh()
    reply = client.post("/v1/score", json=txn(0), headers=KEY)  # canary 2 raises
    assert reply.status_code == 200
    assert (reply.json()["variant"], reply.json()["model_version"]) == ("champion", "1")

    # Drop the canary first: a version already loaded (as canary) is promoted without a
    # load, and this is about a champion whose load fails.
    point(registered, champion="1", canary=None)
    service.models.refresh()
    broken["load"] = True
    point(registered, champion="2", canary=None)
    assert service.models.refresh().champion.version == "1"  # type: ignore[union-attr]
    assert client.post("/v1/score", json=txn(1), headers=KEY).json()["model_version"] == "1"
    metrics = client.get("/metrics").text
    assert 'driftline_model_load_errors_total{alias="champion"} 1.0' in metrics
    assert 'driftline_errors_total{kind="predict",variant="canary"} 1.0' in metrics


BAD = [
    ({"X-API-Key": "nope"}, txn(0), 403, None),
    (KEY, {**txn(0), "amount": "abc"}, 422, "amount"),
    (KEY, {**txn(0), "currency": "XXX"}, 422, "currency"),
    (KEY, {**txn(0), "amount": -5}, 422, "amount"),
    (KEY, {**txn(0), "amount": 2_000_000.0}, 422, "amount"),
    (KEY, {**txn(0), "ts": "2026-01-10T14:30:00"}, 422, "ts"),
    (KEY, {**txn(0), "merchant_country": "de"}, 422, "merchant_country"),
    (KEY, {k: v for k, v in txn(0).items() if k != "user_id"}, 422, "user_id"),
]


def test_rejected_requests_are_not_logged(
    serve: Callable[..., tuple[TestClient, Service]], registered: Settings, settings: Settings
) -> None:
    point(registered, champion="1")
    client, _ = serve(serve_max_batch=3, serve_max_body_bytes=4096)

    assert client.post("/v1/score", json=txn(0)).status_code == 401
    assert client.put("/admin/canary-weight", json={"weight": 0.5}).status_code == 401
    bad_key = {"X-API-Key": "nope"}
    assert (
        client.put("/admin/canary-weight", json={"weight": 0.5}, headers=bad_key).status_code == 403
    )
    for headers, body, code, field in BAD:
        reply = client.post("/v1/score", json=body, headers=headers)
        assert reply.status_code == code, (body, reply.text)
        if field:
            assert field in [e["loc"][-1] for e in reply.json()["detail"]], reply.text
    malformed = client.post(
        "/v1/score",
        content=b'{"transaction_id": ',
        headers={**KEY, "content-type": "application/json"},
    )
    assert malformed.status_code == 422 and malformed.json()["detail"][0]["type"] == "json_invalid"
    # Authentication comes first: without a key even a malformed body gets 401.
    unauthenticated = client.post(
        "/v1/score", content=b"{", headers={"content-type": "application/json"}
    )
    assert unauthenticated.status_code == 401
    too_many = client.post(
        "/v1/score/batch", json={"transactions": [txn(i) for i in range(4)]}, headers=KEY
    )
    assert too_many.status_code == 422 and too_many.json()["detail"][0]["loc"] == [
        "body",
        "transactions",
    ]
    deep = {"transactions": [txn(1, amount=-1.0)]}
    loc = client.post("/v1/score/batch", json=deep, headers=KEY).json()["detail"][0]["loc"]
    assert loc == ["body", "transactions", 0, "amount"]
    huge = {**txn(0), "device_id": "x" * 5000}
    assert client.post("/v1/score", json=huge, headers=KEY).status_code == 413
    chunks = iter([b'{"transaction_id": "', b"x" * 5000, b'"}'])  # streamed, no length
    assert client.post("/v1/score", content=chunks, headers=KEY).status_code == 413

    assert read_predictions(settings, DAY).empty
    assert logged_days(settings) == []


def test_probes_and_metrics(
    serve: Callable[..., tuple[TestClient, Service]], registered: Settings, settings: Settings
) -> None:
    point(registered, champion=None)
    client, service = serve(cache=False)

    assert client.get("/health").status_code == 200
    not_ready = client.get("/ready")
    assert not_ready.status_code == 503
    # Whoever started the server can tell it from another one on the same port.
    identity = {key: not_ready.json()[key] for key in ("instance_id", "pid", "home")}
    assert identity["instance_id"] and identity["pid"] == os.getpid()
    assert identity["home"] == str(settings.home)
    assert client.post("/v1/score", json=txn(0), headers=KEY).status_code == 503

    point(registered, champion="1", canary="2")
    service.models.refresh()
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["champion"] == "1"
    assert {key: ready.json()[key] for key in identity} == identity
    users = {"champion": 0, "canary": 0}
    for user in range(1, 60):
        variant = client.post("/v1/score", json=txn(user, user=user), headers=KEY).json()["variant"]
        users[variant] += 1
    metrics = client.get("/metrics").text
    for variant, count in users.items():
        assert (
            f'driftline_request_latency_seconds_count{{variant="{variant}"}} {count}.0' in metrics
        )
    assert 'driftline_model_version{alias="champion",version="1"} 1.0' in metrics
    assert 'driftline_model_version{alias="canary",version="2"} 2.0' in metrics
