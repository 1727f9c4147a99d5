"""The registry reads and writes of a rollback, without importing MLflow.

``driftline rollback`` is run while a bad model is serving, and the issue asks it to
return in under 2 s. ``import mlflow`` alone takes 1.5 s on a quiet 2-core machine (it
imports pandas, SQLAlchemy, its GenAI and dataset layers), 4 s under load, and opening
the SQLite store adds its schema check: the command took 8-12 s. A rollback needs
five things of the registry (an alias, the model's tags, one version's tags, an alias
flip and a few tag writes), so this module does exactly those against the two
backends driftline configures:

* an MLflow tracking server (``http://`` / ``https://``): MLflow's documented REST API
  (``/api/2.0/mlflow/...``) over the standard library's HTTP client, with the
  server's auth settings (``MLFLOW_TRACKING_TOKEN``, ``MLFLOW_TRACKING_USERNAME`` /
  ``_PASSWORD``, ``MLFLOW_TRACKING_INSECURE_TLS``);
* the local SQLite registry (``sqlite:///``): MLflow's own tables, in **one**
  transaction, only when the database's schema revision is the one these statements
  were written for (:data:`SQLITE_SCHEMA_REVISION`, MLflow's migration head of the
  pinned version; a test keeps the two equal).

Anything else (another database, a schema revision not known here, MLflow's other
auth schemes or workspaces, or ``DRIFTLINE_REGISTRY_FAST_PATH=false``) goes through
:class:`MlflowAliasStore`, i.e. MLflowClient: slower, never wrong. Tests check that
each fast store leaves the registry exactly as MLflowClient's calls do, read back
through MLflowClient.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import sqlite3
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from driftline.core.settings import Settings

log = logging.getLogger(__name__)

#: The MLflow schema revision (``alembic_version``) the SQLite statements below match:
#: the migration head of the MLflow version pinned in ``constraints.txt``.
SQLITE_SCHEMA_REVISION = "dc11669786a5"
#: MLflow's workspace of every row when workspaces are off (the column's default).
DEFAULT_WORKSPACE = "default"
#: MLflow's stage of a deleted version that is kept for redaction.
DELETED_STAGE = "Deleted_Internal"
#: MLflow settings that change how a request is made (beyond what :class:`RestAliasStore`
#: does); when one is set, the rollback goes through MLflowClient.
UNSUPPORTED_MLFLOW_ENV = (
    "MLFLOW_TRACKING_AUTH",
    "MLFLOW_TRACKING_AWS_SIGV4",
    "MLFLOW_TRACKING_CLIENT_CERT_PATH",
    "MLFLOW_TRACKING_SERVER_CERT_PATH",
    "MLFLOW_WORKSPACE",
)
#: Seconds one REST call may take.
REST_TIMEOUT_S = 10.0


class RegistryStoreError(RuntimeError):
    """The registry refused a read or write (missing model or version, server error)."""


@dataclass(frozen=True)
class RegistryWrite:
    """A set of registry writes applied together (one transaction where the store has one).

    Attributes:
        aliases: Alias -> version to point it at.
        deleted_model_tags: Keys of registered-model tags to remove.
        version_tags: Version -> tags to set on it.
    """

    aliases: Mapping[str, str] = field(default_factory=dict)
    deleted_model_tags: tuple[str, ...] = ()
    version_tags: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class ModelState:
    """What a rollback reads of the registered model itself.

    Attributes:
        aliases: Alias -> the version it points at.
        tags: The registered model's tags.
    """

    aliases: Mapping[str, str]
    tags: Mapping[str, str]


class AliasStore(Protocol):
    """What a rollback reads and writes in the registry, for one registered model."""

    def model_state(self) -> ModelState:
        """The registered model's aliases and tags, in one read."""

    def version_tags(self, version: str) -> dict[str, str]:
        """One version's tags."""

    def apply(self, write: RegistryWrite) -> None:
        """Apply ``write``: aliases first, then tag removals, then version tags."""


def alias_store(settings: Settings) -> AliasStore:
    """The fastest correct store for the configured registry (see the module docstring)."""
    uri = settings.mlflow_tracking_uri
    name = settings.model_name
    unsupported = [key for key in UNSUPPORTED_MLFLOW_ENV if os.environ.get(key)]
    if not settings.registry_fast_path:
        unsupported.append("DRIFTLINE_REGISTRY_FAST_PATH=false")
    scheme = urllib.parse.urlsplit(uri).scheme
    if scheme in ("http", "https") and not unsupported:
        return RestAliasStore(uri, name)
    if scheme == "sqlite" and not unsupported:
        path = sqlite_path(uri)
        revision = _sqlite_revision(path)
        if revision == SQLITE_SCHEMA_REVISION:
            return SqliteAliasStore(path, name)
        log.info(
            "registry schema revision %s is not %s: the rollback goes through MLflowClient",
            revision,
            SQLITE_SCHEMA_REVISION,
        )
    return MlflowAliasStore(settings)


def sqlite_path(uri: str) -> Path:
    """The database file of a ``sqlite:///`` URI (``sqlite:////abs`` or ``sqlite:///rel``)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        raise ValueError(f"not a sqlite:/// URI: {uri!r}")
    return Path(uri[len(prefix) :].split("?", 1)[0])


def _sqlite_revision(path: Path) -> str | None:
    """The ``alembic_version`` of an MLflow SQLite database, ``None`` if it has none."""
    if not path.is_file():
        return None
    try:
        with contextlib.closing(_connect(path)) as connection:
            row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else str(row[0])


def _connect(path: Path) -> sqlite3.Connection:
    """A connection that waits for other writers (the scheduler, the service) like MLflow."""
    connection = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    connection.execute("PRAGMA foreign_keys = ON")
    return connection


class SqliteAliasStore:
    """MLflow's SQLite registry tables, read and written directly (one transaction)."""

    def __init__(self, path: Path, name: str) -> None:
        self.path = path
        self.name = name

    def model_state(self) -> ModelState:
        """The registered model's aliases and tags (one connection)."""
        where = (DEFAULT_WORKSPACE, self.name)
        with contextlib.closing(_connect(self.path)) as connection:
            self._require_model(connection)
            aliases = connection.execute(
                "SELECT alias, version FROM registered_model_aliases "
                "WHERE workspace = ? AND name = ?",
                where,
            ).fetchall()
            tags = connection.execute(
                'SELECT "key", value FROM registered_model_tags WHERE workspace = ? AND name = ?',
                where,
            ).fetchall()
        return ModelState(
            {str(alias): str(version) for alias, version in aliases},
            {str(key): str(value) for key, value in tags},
        )

    def version_tags(self, version: str) -> dict[str, str]:
        """One (not deleted) version's tags."""
        with contextlib.closing(_connect(self.path)) as connection:
            self._require_version(connection, version)
            rows = connection.execute(
                'SELECT "key", value FROM model_version_tags '
                "WHERE workspace = ? AND name = ? AND version = ?",
                (DEFAULT_WORKSPACE, self.name, int(version)),
            ).fetchall()
        return {str(key): str(value) for key, value in rows}

    def apply(self, write: RegistryWrite) -> None:
        """Every write of ``write`` in one ``BEGIN IMMEDIATE`` transaction."""
        connection = _connect(self.path)
        try:
            connection.execute("BEGIN IMMEDIATE")
            self._write(connection, write)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        finally:
            connection.close()

    def _write(self, connection: sqlite3.Connection, write: RegistryWrite) -> None:
        self._require_model(connection)
        for alias, version in write.aliases.items():
            self._require_version(connection, version)
            connection.execute(
                "INSERT INTO registered_model_aliases (workspace, name, alias, version) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (workspace, name, alias) "
                "DO UPDATE SET version = excluded.version",
                (DEFAULT_WORKSPACE, self.name, alias, int(version)),
            )
        for key in write.deleted_model_tags:
            connection.execute(
                'DELETE FROM registered_model_tags WHERE workspace = ? AND name = ? AND "key" = ?',
                (DEFAULT_WORKSPACE, self.name, key),
            )
        for version, tags in write.version_tags.items():
            self._require_version(connection, version)
            for key, value in tags.items():
                connection.execute(
                    'INSERT INTO model_version_tags (workspace, name, version, "key", value) '
                    'VALUES (?, ?, ?, ?, ?) ON CONFLICT (workspace, "key", name, version) '
                    "DO UPDATE SET value = excluded.value",
                    (DEFAULT_WORKSPACE, self.name, int(version), key, value),
                )

    def _require_model(self, connection: sqlite3.Connection) -> None:
        found = connection.execute(
            "SELECT 1 FROM registered_models WHERE workspace = ? AND name = ?",
            (DEFAULT_WORKSPACE, self.name),
        ).fetchone()
        if found is None:
            raise RegistryStoreError(f"Registered Model with name={self.name} not found")

    def _require_version(self, connection: sqlite3.Connection, version: str) -> None:
        found = connection.execute(
            "SELECT 1 FROM model_versions WHERE workspace = ? AND name = ? AND version = ? "
            "AND (current_stage IS NULL OR current_stage != ?)",
            (DEFAULT_WORKSPACE, self.name, int(version), DELETED_STAGE),
        ).fetchone()
        if found is None:
            raise RegistryStoreError(
                f"Model Version (name={self.name}, version={version}) not found"
            )


class RestAliasStore:
    """MLflow's REST API (``/api/2.0/mlflow``) over ``urllib``, with the server's auth."""

    def __init__(self, uri: str, name: str) -> None:
        self.base = uri.rstrip("/") + "/api/2.0/mlflow/"
        self.name = name
        self._context = _ssl_context()
        self._headers = {"Content-Type": "application/json", **_auth_headers()}

    def model_state(self) -> ModelState:
        """The registered model's aliases and tags (one ``registered-models/get``)."""
        answer = self._call("GET", "registered-models/get", {"name": self.name})
        model: dict[str, Any] = answer.get("registered_model", {})
        aliases = {str(e["alias"]): str(e["version"]) for e in model.get("aliases", [])}
        return ModelState(aliases, _tags(model.get("tags", [])))

    def version_tags(self, version: str) -> dict[str, str]:
        """One version's tags."""
        answer = self._call("GET", "model-versions/get", {"name": self.name, "version": version})
        return _tags(answer.get("model_version", {}).get("tags", []))

    def apply(self, write: RegistryWrite) -> None:
        """The writes one call each, in :class:`RegistryWrite`'s order (no transaction)."""
        for alias, version in write.aliases.items():
            body = {"name": self.name, "alias": alias, "version": version}
            self._call("POST", "registered-models/alias", body)
        for key in write.deleted_model_tags:
            self._call("DELETE", "registered-models/delete-tag", {"name": self.name, "key": key})
        for version, tags in write.version_tags.items():
            for key, value in tags.items():
                body = {"name": self.name, "version": version, "key": key, "value": value}
                self._call("POST", "model-versions/set-tag", body)

    def _call(self, method: str, endpoint: str, body: Mapping[str, str]) -> dict[str, Any]:
        url = self.base + endpoint
        data = None
        if method == "GET":
            url += "?" + urllib.parse.urlencode(body)
        else:
            data = json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(
                request, timeout=REST_TIMEOUT_S, context=self._context
            ) as response:
                text = response.read().decode() or "{}"
        except urllib.error.HTTPError as error:
            raise RegistryStoreError(_error_message(method, endpoint, error)) from error
        except OSError as error:
            raise RegistryStoreError(f"{method} {url}: {error}") from error
        answer: dict[str, Any] = json.loads(text)
        return answer


def _tags(entries: list[dict[str, str]]) -> dict[str, str]:
    return {str(entry["key"]): str(entry.get("value", "")) for entry in entries}


def _error_message(method: str, endpoint: str, error: urllib.error.HTTPError) -> str:
    """MLflow's ``message`` of a refused call, else the status line."""
    try:
        detail = json.loads(error.read().decode()).get("message", "")
    except (ValueError, OSError):
        detail = ""
    return f"{method} {endpoint}: HTTP {error.code} {detail or error.reason}"


def _auth_headers() -> dict[str, str]:
    """MLflow's token or basic auth, from the same variables MLflowClient reads."""
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if token:
        return {"Authorization": f"Bearer {token}"}
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        pair = base64.standard_b64encode(f"{user}:{password}".encode()).decode()
        return {"Authorization": f"Basic {pair}"}
    return {}


def _ssl_context() -> ssl.SSLContext | None:
    """No verification when ``MLFLOW_TRACKING_INSECURE_TLS`` is true (as MLflow does)."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() in ("true", "1"):
        return ssl._create_unverified_context()
    return None


class MlflowAliasStore:
    """MLflowClient behind the same interface: any registry MLflow supports."""

    def __init__(self, settings: Settings) -> None:
        from driftline.lifecycle.registry import client

        self.client = client(settings)
        self.name = settings.model_name

    def model_state(self) -> ModelState:
        """The registered model's aliases and tags (one ``get_registered_model``)."""
        model = self.client.get_registered_model(self.name)
        aliases = {alias: str(version) for alias, version in (model.aliases or {}).items()}
        return ModelState(aliases, dict(model.tags or {}))

    def version_tags(self, version: str) -> dict[str, str]:
        """One version's tags."""
        return dict(self.client.get_model_version(self.name, version).tags or {})

    def apply(self, write: RegistryWrite) -> None:
        """The writes one MLflowClient call each, in :class:`RegistryWrite`'s order."""
        for alias, version in write.aliases.items():
            self.client.set_registered_model_alias(self.name, alias, version)
        for key in write.deleted_model_tags:
            self.client.delete_registered_model_tag(self.name, key)
        for version, tags in write.version_tags.items():
            for key, value in tags.items():
                self.client.set_model_version_tag(self.name, version, key, value)
