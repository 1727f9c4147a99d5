"""The canary control is registry state: every replica routes the same share of users.

Two (and later three) scoring apps run in-process on one SQLite MLflow registry holding
two real registered versions, each with its own real alias poller at the default
``serve_poll_seconds``. An admin change on one replica is written to the registry and
must be applied by the others within one poll; pause routes nobody to the canary;
promote and abort clear the control; a replica started later follows it; and the users
routed to the canary are the same on every replica (the split is by user id).
``driftline models`` shows the control on the canary's row.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from driftline.cli import app as cli
from driftline.core.settings import Settings, get_settings
from driftline.lifecycle import promotion, registry
from driftline.lifecycle.registry import CanaryControl, ServingState, parse_canary_control
from driftline.serving import ModelProvider, create_app
from driftline.serving.routing import bucket
from tests.registered import (
    KEY,
    Features,
    Loader,
    clear_aliases,
    on_registry,
    register_models,
    txn,
    wait_for,
)

POLL = 0.5  # the default serve_poll_seconds
USERS = range(1, 251)  # one batch (serve_max_batch is 256)

Start = Callable[[], TestClient]


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Versions 1 and 2 in a fresh registry."""
    return register_models(tmp_path_factory.mktemp("registry"), seeds=(0, 1))


@pytest.fixture
def replica(settings: Settings, registered: Settings) -> Iterator[Start]:
    """Start a replica (its own home, poller running) on the shared registry."""
    clients: list[TestClient] = []

    def start() -> TestClient:
        cfg = on_registry(settings, registered, serve_poll_seconds=POLL, serve_canary_weight=0.05)
        app = create_app(cfg, features=Features(), models=ModelProvider(cfg, load=Loader(cfg)))
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield start
    for client in clients:
        client.__exit__(None, None, None)


def canary(client: TestClient) -> dict[str, object]:
    """``GET /admin/canary`` of one replica."""
    reply = client.get("/admin/canary", headers=KEY)
    assert reply.status_code == 200, reply.text
    body: dict[str, object] = reply.json()
    return body


def canary_users(client: TestClient) -> set[int]:
    """The users of :data:`USERS` that ``client`` routes to the canary."""
    chunk = [txn(u, user=u) for u in USERS]
    reply = client.post("/v1/score/batch", json={"transactions": chunk}, headers=KEY)
    assert reply.status_code == 200, reply.text
    return {
        t["user_id"]
        for t, s in zip(chunk, reply.json()["scores"], strict=True)
        if s["variant"] == "canary"
    }


def expected_users(weight: float) -> set[int]:
    """The users a weight routes to the canary (sha256 buckets of the user id)."""
    return {u for u in USERS if bucket(u) < weight}


def gauge(client: TestClient) -> float:
    """The replica's ``driftline_canary_weight``."""
    found = re.search(r"^driftline_canary_weight (\S+)$", client.get("/metrics").text, re.M)
    assert found is not None
    return float(found.group(1))


def models_cli(cfg: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """``driftline models`` on ``cfg``'s registry: its JSON rows by version."""
    monkeypatch.setenv("DRIFTLINE_MLFLOW_TRACKING_URI", cfg.mlflow_tracking_uri)
    monkeypatch.setenv("DRIFTLINE_MLFLOW_ARTIFACT_URI", cfg.mlflow_artifact_uri)
    get_settings.cache_clear()
    try:
        done = CliRunner().invoke(cli, ["models"])
    finally:
        get_settings.cache_clear()
    assert done.exit_code == 0, done.output
    return {row["version"]: row for row in json.loads(done.stdout)}


def test_every_replica_follows_the_registry_canary_control(
    replica: Start, registered: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clear_aliases(registered)
    registry.set_alias(registered, registry.CHAMPION, "1")
    promotion.start_canary(registered, "2", weight=0.3, reason="test", actor="test")
    a, b = replica(), replica()
    for client in (a, b):
        assert wait_for(lambda c=client: canary(c)["canary"] == "2", 60)  # type: ignore[misc]
        assert canary(client) | {"updated": ""} == {
            "canary": "2",
            "weight": 0.3,
            "state": "running",
            "serving_weight": 0.3,
            "source": "registry",
            "actor": "test",
            "updated": "",
        }
        assert canary_users(client) == expected_users(0.3)
        assert gauge(client) == 0.3

    # An admin change on one replica: applied there at once, on the other in one poll.
    changed = a.put("/admin/canary-weight", json={"weight": 0.6}, headers=KEY)
    started = time.monotonic()
    assert changed.status_code == 200, changed.text
    assert changed.json()["serving_weight"] == 0.6 and changed.json()["actor"].startswith("admin")
    assert wait_for(lambda: canary(b)["weight"] == 0.6, 10)
    followed = time.monotonic() - started
    assert followed <= POLL + 0.5, f"replica b followed after {followed:.2f} s"
    assert canary_users(a) == canary_users(b) == expected_users(0.6)
    assert len(expected_users(0.6)) > len(expected_users(0.3)) > 0
    assert gauge(a) == gauge(b) == 0.6

    # Pause (from the other replica): nobody goes to the canary, anywhere.
    assert b.put("/admin/canary-state", json={"state": "paused"}, headers=KEY).status_code == 200
    assert wait_for(lambda: canary(a)["serving_weight"] == 0.0, 10)
    for client in (a, b):
        assert canary(client)["state"] == "paused" and canary(client)["weight"] == 0.6
        assert canary_users(client) == set()
    assert models_cli(registered, monkeypatch)["2"]["canary_control"] | {"updated": ""} == {
        "version": "2",
        "weight": 0.6,
        "state": "paused",
        "serving_weight": 0.0,
        "actor": canary(a)["actor"],
        "updated": "",
    }
    assert b.put("/admin/canary-state", json={"state": "running"}, headers=KEY).status_code == 200
    assert wait_for(lambda: canary(a)["serving_weight"] == 0.6, 10)

    # A replica started later follows the recorded control from its first poll.
    late = replica()
    assert wait_for(lambda: canary(late)["canary"] == "2", 60)
    assert canary(late)["serving_weight"] == 0.6 and canary(late)["source"] == "registry"
    assert canary_users(late) == canary_users(a)

    # Abort: routing stops everywhere, the alias stays until the rollout concludes.
    assert a.put("/admin/canary-state", json={"state": "aborted"}, headers=KEY).status_code == 200
    for client in (late, b):  # each within its own next poll
        assert wait_for(lambda c=client: canary(c)["serving_weight"] == 0.0, 10)  # type: ignore[misc]
    assert canary_users(late) == canary_users(b) == set()
    assert registry.serving_state(registered).aliases[registry.CANARY] == "2"

    # Promote clears the control: no canary, nothing recorded, serve_canary_weight.
    promotion.promote(registered, reason="test", actor="test")
    tags = registry.client(registered).get_registered_model(registered.model_name).tags or {}
    assert not set(tags) & set(registry.CANARY_TAGS)
    for client in (a, b, late):
        assert wait_for(lambda c=client: canary(c)["canary"] is None, 10)  # type: ignore[misc]
        assert canary(client)["source"] == "settings"


def test_abort_clears_the_control_and_no_canary_is_a_409(
    replica: Start, registered: Settings
) -> None:
    clear_aliases(registered)
    registry.set_alias(registered, registry.CHAMPION, "1")
    a = replica()
    assert wait_for(lambda: a.get("/ready").status_code == 200, 60)
    refused = a.put("/admin/canary-weight", json={"weight": 0.5}, headers=KEY)
    assert refused.status_code == 409 and "no canary" in refused.json()["detail"]

    promotion.start_canary(registered, "2", weight=0.4, reason="test", actor="test")
    assert wait_for(lambda: canary(a)["serving_weight"] == 0.4, 60)
    promotion.abort_canary(registered, reason="test", actor="test")
    assert registry.serving_state(registered).canary is None
    assert wait_for(lambda: canary(a)["source"] == "settings", 10)
    assert canary(a)["canary"] is None


def test_a_stale_or_malformed_control_is_ignored() -> None:
    control = CanaryControl("2", 0.5, "paused")
    assert control.serving_weight == 0.0
    assert ServingState({"canary": "2"}, None, control).active_canary == control
    assert ServingState({"canary": "3"}, None, control).active_canary is None  # another canary
    assert ServingState({}, None, control).active_canary is None
    tags = {"canary.version": "2", "canary.weight": "0.5", "canary.state": "running"}
    assert parse_canary_control(tags) == CanaryControl("2", 0.5, "running")
    assert parse_canary_control({**tags, "canary.weight": "1.5"}) is None
    assert parse_canary_control({**tags, "canary.weight": "nan"}) is None
    assert parse_canary_control({**tags, "canary.state": "stopped"}) is None
    assert parse_canary_control({"canary.weight": "0.5"}) is None
