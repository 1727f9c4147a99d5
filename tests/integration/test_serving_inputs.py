"""Hostile and malformed input to the scoring service: always a 4xx, never scored or logged.

Reuses the app factory and the registry of ``test_serving.py`` (imported fixtures: the
two small models are trained once for this module too). Bodies are written as raw JSON
text, because what matters is what a JSON parser makes of them: ``NaN`` and ``Infinity``
are accepted literals, ``1e400`` parses to infinity, ``"\\ud800"`` to a lone surrogate.
One test runs a real uvicorn server to show a rejection keeps the connection usable.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from driftline.core.settings import Settings
from driftline.data.predictions import logged_days
from driftline.serving import read_predictions
from driftline.serving.api import Service
from driftline.serving.lookup import FeatureRow
from tests.integration import test_serving
from tests.integration.test_serving import (
    DAY,
    KEY,
    DictFeatures,
    point,
    txn,
)
from tests.servers import uvicorn_server

# The fixtures of test_serving.py, by name (module-scoped ``registered`` runs once here).
registered = test_serving.registered
serve = test_serving.serve

Serve = Callable[..., tuple[TestClient, Service]]
JSON = {**KEY, "content-type": "application/json"}


def raw(i: int = 0, **literals: str) -> bytes:
    """A transaction body with some fields replaced by raw JSON text (``NaN``, ``1e400``)."""
    body = json.dumps(txn(i) | {name: f"@{name}@" for name in literals})
    for name, literal in literals.items():
        body = body.replace(f'"@{name}@"', literal)
    return body.encode()


#: (field, raw JSON value): each must be a 422 naming the field.
BAD_FIELDS = [
    # non-finite and out-of-range numbers
    ("amount", "NaN"),
    ("amount", "Infinity"),
    ("amount", "-Infinity"),
    ("amount", "1e400"),
    ("amount", "-1e400"),
    ("amount", "0"),
    ("amount", "-5"),
    ("amount", "2000000.5"),
    # wrong JSON types, never coerced
    ("amount", '"363"'),
    ("amount", "true"),
    ("amount", "null"),
    ("amount", "[1]"),
    ("user_id", '"7"'),
    ("user_id", "true"),
    ("user_id", "1.5"),
    ("user_id", "1e400"),
    ("transaction_id", "123"),
    ("channel", "false"),
    # entity ids outside the store's int64 keys
    ("user_id", str(2**63)),
    ("merchant_id", str(2**63)),
    ("card_id", str(2**64 + 1)),
    ("user_id", "0"),
    # lone surrogates and control characters
    ("transaction_id", '"\\ud800"'),
    ("transaction_id", '"tx-\\udfff-1"'),
    ("device_id", '"\\ud83d"'),
    ("transaction_id", '"tx\\u0000"'),
    ("transaction_id", '"tx\\n1"'),
    ("device_id", '"dev\\u007f"'),
    ("merchant_category", '"\\ud800"'),
    # timestamps outside the plausible range, with no UTC form, or naive
    ("ts", '"0001-01-01T00:00:00+05:00"'),
    ("ts", '"9999-12-31T23:00:00-05:00"'),
    ("ts", '"0001-01-01T00:00:00+00:00"'),
    ("ts", '"1999-12-31T23:59:59+00:00"'),
    ("ts", '"2100-01-01T00:00:00+00:00"'),
    ("ts", '"2026-01-10T14:30:00"'),
]


def locations(reply: Any) -> list[list[str | int]]:
    """The ``loc`` of each error of a 422 body (which must never echo the input)."""
    detail = reply.json()["detail"]
    assert all(set(error) == {"type", "loc", "msg"} for error in detail), detail
    return [error["loc"] for error in detail]


def test_each_bad_input_is_a_4xx_naming_the_field_and_is_never_scored_or_logged(
    serve: Serve, registered: Settings, settings: Settings
) -> None:
    point(registered, champion="1")
    store = DictFeatures()
    client, _ = serve(store)

    for name, literal in BAD_FIELDS:
        reply = client.post("/v1/score", content=raw(**{name: literal}), headers=JSON)
        assert reply.status_code == 422, (name, literal, reply.text)
        assert ["body", name] in locations(reply), (name, literal, reply.text)
    # In a batch the path names the row; one bad row rejects the whole batch.
    batch = b'{"transactions": [%s, %s]}' % (raw(1), raw(2, amount="NaN"))
    reply = client.post("/v1/score/batch", content=batch, headers=JSON)
    assert reply.status_code == 422 and locations(reply) == [["body", "transactions", 1, "amount"]]
    # Bodies that are not JSON text at all: a 4xx from the parser, not a 500.
    for body in (b'{"amount": \xff\xfe}', b'{"user_id": ' + b"9" * 5000 + b"}", b"NaN"):
        reply = client.post("/v1/score", content=body, headers=JSON)
        assert 400 <= reply.status_code < 500, (body[:20], reply.text)
    assert store.calls == 0  # nothing rejected reached the feature store

    # A JSON integer is a valid amount, and the boundaries of the range are served.
    edges = {"amount": "420", "ts": '"2000-01-01T05:00:00+05:00"'}
    accepted = client.post("/v1/score", content=raw(99, **edges), headers=JSON)
    assert accepted.status_code == 200, accepted.text
    logged = read_predictions(settings, DAY)
    assert logged.empty  # the accepted row is logged under its own day, 2000-01-01
    assert logged_days(settings) == [date(2000, 1, 1)]

    metrics = client.get("/metrics").text
    rejected = len(BAD_FIELDS) + 3  # the fields and the three unparsable bodies
    assert 'driftline_http_requests_total{route="/v1/score",status="422"} ' in metrics
    counted = _counts(metrics)
    assert counted[("/v1/score", "422")] + counted.get(("/v1/score", "400"), 0) == rejected
    assert counted[("/v1/score/batch", "422")] == 1
    assert counted[("/v1/score", "200")] == 1


def _counts(metrics: str) -> dict[tuple[str, str], float]:
    """``driftline_http_requests_total`` samples as {(route, status): count}."""
    counts: dict[tuple[str, str], float] = {}
    for line in metrics.splitlines():
        if line.startswith("driftline_http_requests_total{"):
            labels, value = line.removeprefix("driftline_http_requests_total").rsplit(" ", 1)
            parsed = dict(part.split("=", 1) for part in labels.strip("{}").split(","))
            counts[(parsed["route"].strip('"'), parsed["status"].strip('"'))] = float(value)
    return counts


class Int64Features(DictFeatures):
    """Fails like Feast on an id it cannot convert to int64 (a store failure, if reached).

    Stands in for the Feast online store, whose failure on such ids the issue measured;
    here the point is that the id never reaches any store.
    """

    def fetch(self, entities: Sequence[tuple[int, int]]) -> list[FeatureRow]:
        if any(not -(2**63) <= key < 2**63 for pair in entities for key in pair):
            self.calls += 1
            raise OverflowError("Python int too large to convert to C long")
        return super().fetch(entities)


def test_hostile_entity_ids_cannot_open_the_breaker(serve: Serve, registered: Settings) -> None:
    point(registered, champion="1")
    store = Int64Features()
    client, service = serve(store, serve_breaker_failures=2)

    hostile = [
        raw(0, user_id=str(2**63)),
        raw(1, merchant_id=str(2**63)),
        raw(2, user_id=str(2**70), merchant_id=str(2**63)),
    ] * 3
    for body in hostile:
        assert client.post("/v1/score", content=body, headers=JSON).status_code == 422
    batch = {"transactions": [txn(3), txn(4, user=2**63)]}
    assert client.post("/v1/score/batch", json=batch, headers=KEY).status_code == 422
    assert store.calls == 0
    assert service.scorer.features.breaker.state == "closed"

    normal = [client.post("/v1/score", json=txn(i, user=i), headers=KEY) for i in range(1, 21)]
    assert [r.status_code for r in normal] == [200] * 20
    assert not any(r.json()["features_fallback"] for r in normal)
    assert store.calls == 20
    assert "driftline_feature_fallback_total 0.0" in client.get("/metrics").text


def test_requests_are_counted_by_route_and_status_including_errors(
    serve: Serve, registered: Settings
) -> None:
    point(registered, champion="1")
    client, _ = serve(serve_max_body_bytes=4096)

    assert client.get("/health").status_code == 200
    assert client.post("/v1/score", json=txn(0), headers=KEY).status_code == 200
    assert client.post("/v1/score", json=txn(1)).status_code == 401
    assert client.post("/v1/score", json=txn(2), headers={"X-API-Key": "no"}).status_code == 403
    assert client.post("/v1/score", json=txn(3, amount=-1), headers=KEY).status_code == 422
    big = txn(4, device_id="x" * 5000)
    assert client.post("/v1/score", json=big, headers=KEY).status_code == 413
    assert client.get("/v1/score", headers=KEY).status_code == 405
    assert client.get("/v1/nope", headers=KEY).status_code == 404
    assert client.get("/no/such/path").status_code == 404
    weight = {"weight": "0.5"}  # a string: no coercion here either
    assert client.put("/admin/canary-weight", json=weight, headers=KEY).status_code == 422

    counts = _counts(client.get("/metrics").text)
    assert counts == {
        ("/health", "200"): 1.0,
        ("/v1/score", "200"): 1.0,
        ("/v1/score", "401"): 1.0,
        ("/v1/score", "403"): 1.0,
        ("/v1/score", "422"): 1.0,
        ("/v1/score", "413"): 1.0,
        ("/v1/score", "405"): 1.0,
        ("unmatched", "404"): 2.0,
        ("/admin/canary-weight", "422"): 1.0,
    }


def test_an_unhandled_error_is_counted_as_a_500(
    serve: Serve, registered: Settings, tmp_path: Path
) -> None:
    # A failing model is answered by the fallback chain (test_fallback_chain.py); a
    # prediction log that cannot be written is an error that escapes the app.
    point(registered, champion="1")
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    client, _ = serve(home=blocked / "state", lake_uri=str(blocked / "state" / "lake"))
    # The real server answers an exception that escapes the app with a 500.
    raw_client = TestClient(client.app, raise_server_exceptions=False)

    assert raw_client.post("/v1/score", json=txn(0), headers=KEY).status_code == 500
    counts = _counts(client.get("/metrics").text)
    assert counts[("/v1/score", "500")] == 1.0


@pytest.fixture
def uvicorn_url(serve: Serve, registered: Settings) -> Iterator[tuple[str, int]]:
    """The app served by a real uvicorn server on a free loopback port."""
    point(registered, champion="1")
    client, _ = serve()  # its lifespan is already running: uvicorn runs none
    app = client.app
    with uvicorn_server(app) as url:
        host, port = url.removeprefix("http://").rsplit(":", 1)
        yield host, int(port)


def test_a_rejection_keeps_the_keep_alive_connection_usable(
    uvicorn_url: tuple[str, int],
) -> None:
    host, port = uvicorn_url
    connection = http.client.HTTPConnection(host, port, timeout=10.0)

    def post(body: bytes) -> tuple[int, Any]:
        connection.request("POST", "/v1/score", body=body, headers=JSON)
        reply = connection.getresponse()
        payload = json.loads(reply.read())
        assert not reply.will_close, reply.getheaders()
        return reply.status, payload

    assert post(raw(0))[0] == 200
    socket = connection.sock
    for name, literal in [
        ("amount", "NaN"),
        ("amount", "1e400"),
        ("transaction_id", '"\\ud800"'),
        ("user_id", str(2**63)),
        ("ts", '"0001-01-01T00:00:00+05:00"'),
    ]:
        status, payload = post(raw(1, **{name: literal}))
        assert status == 422 and ["body", name] in [e["loc"] for e in payload["detail"]]
        assert connection.sock is socket  # the same connection, never reset
    status, payload = post(raw(2))
    assert status == 200 and payload["transaction_id"] == "tx-2"
    assert connection.sock is socket
    connection.close()
