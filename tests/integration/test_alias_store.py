"""The rollback's registry access without MLflow: same result as MLflowClient, or refused.

Each fast store (MLflow's SQLite tables directly, MLflow's REST API over ``urllib``
against a real ``mlflow server``) runs the real ``promotion.rollback`` on one registered
model while :class:`MlflowAliasStore` runs it on an identical twin; both are then read
back through MLflowClient and must be equal.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from driftline.core.settings import Settings
from driftline.lifecycle import alias_store as stores
from driftline.lifecycle import promotion, registry
from driftline.lifecycle.alias_store import (
    MlflowAliasStore,
    RegistryStoreError,
    RegistryWrite,
    RestAliasStore,
    SqliteAliasStore,
    alias_store,
)
from driftline.orchestration.processes import free_port, mlflow_server

NOW = datetime(2026, 1, 20, 12, 0, tzinfo=UTC)


def _register(settings: Settings, name: str) -> None:
    """Versions 1-3 of ``name``: 2 is the champion, 1 the recorded previous one."""
    client = registry.client(settings)
    client.create_registered_model(name)
    for _ in range(3):  # the flip reads aliases and tags only: no model files needed
        client.create_model_version(name, source="s3://driftline-models/none")
    client.set_registered_model_alias(name, registry.CHAMPION, "2")
    client.set_registered_model_alias(name, registry.CANARY, "3")
    client.set_registered_model_tag(name, registry.PREVIOUS_CHAMPION_TAG, "1")
    client.set_registered_model_tag(name, "owner", "fraud-team")
    client.set_model_version_tag(name, "1", "gate.staging", "passed")


def _state(settings: Settings, name: str) -> dict[str, Any]:
    """Aliases, model tags and every version's tags, as MLflowClient reads them."""
    client = registry.client(settings)
    model = client.get_registered_model(name)
    versions = {
        str(v.version): dict(v.tags or {}) for v in client.search_model_versions(f"name='{name}'")
    }
    aliases = {alias: str(version) for alias, version in model.aliases.items()}
    return {"aliases": aliases, "tags": dict(model.tags or {}), "versions": versions}


def _twins(settings: Settings) -> tuple[Settings, Settings]:
    """Two identical registered models in the same registry."""
    fast = settings.model_copy(update={"model_name": "fast-path"})
    slow = settings.model_copy(update={"model_name": "mlflow-client"})
    for twin in (fast, slow):
        _register(twin, twin.model_name)
    return fast, slow


def _rollback_both(
    fast: Settings, slow: Settings, monkeypatch: pytest.MonkeyPatch
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Roll back ``fast`` through its fast store and ``slow`` through MLflowClient."""
    done = promotion.rollback(fast, reason="bad canary", actor="test", now=NOW)
    assert (done.version, done.previous) == ("1", "2")
    with monkeypatch.context() as patched:
        patched.setattr(promotion, "alias_store", MlflowAliasStore)
        promotion.rollback(slow, reason="bad canary", actor="test", now=NOW)
    return _state(fast, fast.model_name), _state(slow, slow.model_name)


# --------------------------------------------------------------------------------------
# SQLite
# --------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_registry(settings: Settings) -> Settings:
    """A fresh MLflow SQLite registry (created by MLflowClient, so at MLflow's head)."""
    registry.client(settings).search_registered_models()
    return settings


def test_the_sqlite_revision_is_the_pinned_mlflows_head(sqlite_registry: Settings) -> None:
    """A database MLflow just created is at the revision the statements were written for.

    When this fails, the pinned MLflow changed its schema: check the statements in
    ``SqliteAliasStore`` against the new tables, then update ``SQLITE_SCHEMA_REVISION``.
    """
    path = stores.sqlite_path(sqlite_registry.mlflow_tracking_uri)
    with sqlite3.connect(path) as connection:
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert revision == stores.SQLITE_SCHEMA_REVISION
    assert isinstance(alias_store(sqlite_registry), SqliteAliasStore)


def test_sqlite_rollback_leaves_what_mlflowclient_leaves(
    sqlite_registry: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Aliases, model tags and version tags equal the MLflowClient twin's, tag for tag."""
    fast, slow = _twins(sqlite_registry)
    fast_state, slow_state = _rollback_both(fast, slow, monkeypatch)
    assert fast_state == slow_state
    assert fast_state["aliases"] == {"champion": "1", "canary": "3"}
    assert registry.PREVIOUS_CHAMPION_TAG not in fast_state["tags"]
    assert fast_state["versions"]["2"]["decision.rolled_back_from.to"] == "1"
    assert fast_state["versions"]["1"]["decision.restored.from"] == "2"
    # The serving side's reader (MLflowClient's alias lookup) sees the flip.
    restored = registry.version_by_alias(fast, registry.CHAMPION)
    assert restored is not None and str(restored.version) == "1"


def test_a_failed_sqlite_write_changes_nothing(sqlite_registry: Settings) -> None:
    """One transaction: a missing version late in the write undoes the alias flip."""
    _register(sqlite_registry, sqlite_registry.model_name)
    before = _state(sqlite_registry, sqlite_registry.model_name)
    store = alias_store(sqlite_registry)
    write = RegistryWrite(
        aliases={registry.CHAMPION: "1"},
        deleted_model_tags=(registry.PREVIOUS_CHAMPION_TAG,),
        version_tags={"1": {"a": "b"}, "9": {"a": "b"}},
    )
    with pytest.raises(RegistryStoreError, match="version=9"):
        store.apply(write)
    assert _state(sqlite_registry, sqlite_registry.model_name) == before


def test_sqlite_refuses_a_missing_model_or_a_deleted_version(sqlite_registry: Settings) -> None:
    """MLflow's own refusals: no such model; a deleted version cannot take an alias."""
    with pytest.raises(RegistryStoreError, match="not found"):
        alias_store(sqlite_registry).model_state()
    _register(sqlite_registry, sqlite_registry.model_name)
    registry.client(sqlite_registry).delete_model_version(sqlite_registry.model_name, "1")
    with pytest.raises(RegistryStoreError, match="version=1"):
        alias_store(sqlite_registry).apply(RegistryWrite(aliases={registry.CHAMPION: "1"}))


def test_an_unknown_schema_revision_goes_through_mlflowclient(
    sqlite_registry: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another MLflow's schema, or an MLflow auth/workspace setting: MLflowClient decides."""
    path = stores.sqlite_path(sqlite_registry.mlflow_tracking_uri)
    monkeypatch.setattr(stores, "SQLITE_SCHEMA_REVISION", "not-this-one")
    assert isinstance(alias_store(sqlite_registry), MlflowAliasStore)
    monkeypatch.undo()
    assert path.is_file()
    off = sqlite_registry.model_copy(update={"registry_fast_path": False})
    assert isinstance(alias_store(off), MlflowAliasStore)
    monkeypatch.setenv("MLFLOW_WORKSPACE", "team-a")
    assert isinstance(alias_store(sqlite_registry), MlflowAliasStore)


def test_a_missing_previous_champion_is_refused_through_the_fast_store(
    sqlite_registry: Settings,
) -> None:
    """The rollback's refusals read through the fast store too."""
    _register(sqlite_registry, sqlite_registry.model_name)
    promotion.rollback(sqlite_registry, reason="first", actor="test")
    with pytest.raises(promotion.PromotionError, match="itself restored by a rollback from"):
        promotion.rollback(sqlite_registry, reason="again", actor="test")


# --------------------------------------------------------------------------------------
# REST against a real `mlflow server`
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``mlflow server`` on loopback with a SQLite backend (one worker)."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    artifacts = {"--default-artifact-root": (folder / "artifacts").as_uri()}
    backend = f"sqlite:///{folder / 'mlflow.db'}"
    with mlflow_server(port, backend, artifacts, log_path=folder / "mlflow.log"):
        yield f"http://127.0.0.1:{port}"


@pytest.fixture
def server_registry(
    settings: Settings, mlflow_url: str, request: pytest.FixtureRequest
) -> Settings:
    """Settings against the server, with a model name of this test's own."""
    return settings.model_copy(
        update={"mlflow_tracking_uri": mlflow_url, "model_name": request.node.name[:60]}
    )


@pytest.mark.slow  # an `mlflow server` start: 10-60 s
def test_rest_rollback_leaves_what_mlflowclient_leaves(
    server_registry: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Against the server: the same registry state as MLflowClient's calls."""
    assert isinstance(alias_store(server_registry), RestAliasStore)
    fast = server_registry.model_copy(update={"model_name": "rest-fast"})
    slow = server_registry.model_copy(update={"model_name": "rest-mlflow-client"})
    for twin in (fast, slow):
        _register(twin, twin.model_name)
    fast_state, slow_state = _rollback_both(fast, slow, monkeypatch)
    assert fast_state == slow_state
    assert fast_state["aliases"] == {"champion": "1", "canary": "3"}


@pytest.mark.slow
def test_rest_errors_carry_mlflows_message(server_registry: Settings) -> None:
    """A missing model or version is a RegistryStoreError with the server's words."""
    store = alias_store(server_registry)
    with pytest.raises(RegistryStoreError, match=r"HTTP 404 .*not found"):
        store.model_state()
    _register(server_registry, server_registry.model_name)
    with pytest.raises(RegistryStoreError, match="HTTP 404"):
        store.apply(RegistryWrite(aliases={registry.CHAMPION: "9"}))
    assert store.model_state().aliases[registry.CHAMPION] == "2"
    assert store.version_tags("1") == {"gate.staging": "passed"}


def test_an_unreachable_server_is_a_registry_error(settings: Settings) -> None:
    """Nothing listening: an error naming the URL, not a hang or a traceback of urllib."""
    port = free_port()
    store = RestAliasStore(f"http://127.0.0.1:{port}", settings.model_name)
    with pytest.raises(RegistryStoreError, match=f"127.0.0.1:{port}"):
        store.model_state()
