"""A local PostgreSQL server for Airflow's metadata DB: created once, started, reused.

The real scheduler profile (``make airflow-ui``, the scheduler tests) needs a metadata
DB that takes concurrent writers: the scheduler, the DAG processor, the triggerer, the
API server and every task process. SQLite cannot (Airflow refuses backfills on it under
concurrent access), so this runs a PostgreSQL cluster of its own under the state folder,
on a port of its own, listening on loopback only, with ``trust`` authentication (only
local processes can reach it; it holds no data but the scheduler's bookkeeping).

:func:`ensure_postgres` is idempotent: it creates the cluster (``initdb``) only when the
folder holds none, starts it only when it is not running, and creates the database only
when it is missing. :func:`stop_postgres` stops it. PostgreSQL refuses to run as root;
as root, its commands run as the ``postgres`` user (``runuser``), which then owns the
cluster folder (its parent folders must be traversable by that user).

Only the standard library is imported; the server binaries come from
``DRIFTLINE_PG_BIN``, ``/usr/lib/postgresql/<newest>/bin`` or the ``PATH``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

#: Folder of ``initdb``/``pg_ctl``/``psql`` when they are neither on PATH nor in the
#: Debian location.
PG_BIN_ENV = "DRIFTLINE_PG_BIN"
#: The programs used, which must sit in one folder.
NEEDED = ("initdb", "pg_ctl", "psql", "createdb")
#: The user PostgreSQL runs as when this process is root.
OS_USER = "postgres"
#: The database superuser (``trust`` on loopback).
DB_USER = "postgres"


class PostgresError(RuntimeError):
    """The cluster could not be created, started or reached (the message says why)."""


@dataclass(frozen=True)
class PostgresServer:
    """A running local cluster: where it lives and where it listens."""

    root: Path
    port: int
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        """The cluster's data folder."""
        return self.root / "data"

    def url(self, database: str = "airflow") -> str:
        """SQLAlchemy URL of ``database`` (psycopg2 driver)."""
        return f"postgresql+psycopg2://{DB_USER}@{self.host}:{self.port}/{database}"


def pg_bin() -> Path:
    """The folder of the PostgreSQL server binaries.

    Raises:
        PostgresError: None found.
    """
    configured = os.environ.get(PG_BIN_ENV)
    if configured:
        return Path(configured)
    installed = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
    )
    on_path = shutil.which("initdb")
    candidates = [p.parent for p in reversed(installed)] + (
        [Path(on_path).parent] if on_path else []
    )
    for folder in candidates:
        if all((folder / name).exists() for name in NEEDED):
            return folder
    raise PostgresError(
        f"no PostgreSQL server binaries ({', '.join(NEEDED)} in one folder) found: install "
        f"PostgreSQL or set {PG_BIN_ENV}"
    )


def _as_owner(command: Sequence[str]) -> list[str]:
    if os.geteuid() == 0:
        return ["runuser", "-u", OS_USER, "--", *command]
    return list(command)


def _run(command: Sequence[str], *, timeout_s: float = 120.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _as_owner(command),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _running_port(data_dir: Path) -> int | None:
    """Port of the server running on ``data_dir`` (None: not running)."""
    status = _run([str(pg_bin() / "pg_ctl"), "status", "-D", str(data_dir)])
    if status.returncode != 0:
        return None
    lines = (data_dir / "postmaster.pid").read_text().splitlines()
    return int(lines[3]) if len(lines) > 3 and lines[3].strip().isdigit() else None


def ensure_postgres(
    root: Path, port: int, database: str = "airflow", *, timeout_s: float = 60.0
) -> PostgresServer:
    """The cluster under ``root``, created and started if need be, with ``database``.

    Args:
        root: Folder of the cluster (``data/``) and its log (``postgres.log``).
        port: TCP port on 127.0.0.1 it listens on.
        database: Database to create when missing.
        timeout_s: Longest wait for the server to start.

    Raises:
        PostgresError: ``initdb``, the start or ``createdb`` failed (their output is in
            the message), or the cluster already runs on another port.
    """
    binaries = pg_bin()
    server = PostgresServer(root.resolve(), port)
    server.root.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        shutil.chown(server.root, OS_USER, OS_USER)
    if not (server.data_dir / "PG_VERSION").exists():
        created = _run(
            [
                str(binaries / "initdb"),
                "-D",
                str(server.data_dir),
                "-U",
                DB_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-instructions",
            ]
        )
        if created.returncode != 0:
            raise PostgresError(f"initdb in {server.data_dir} failed:\n{created.stderr[-2000:]}")
    running = _running_port(server.data_dir)
    if running is None:
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {server.data_dir}"
        started = _run(
            [
                str(binaries / "pg_ctl"),
                "start",
                "-D",
                str(server.data_dir),
                "-l",
                str(server.root / "postgres.log"),
                "-w",
                "-t",
                str(int(timeout_s)),
                "-o",
                options,
            ],
            timeout_s=timeout_s + 30,
        )
        if started.returncode != 0:
            log = server.root / "postgres.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise PostgresError(
                f"PostgreSQL in {server.data_dir} did not start on port {port}:\n"
                f"{started.stdout[-1000:]}{started.stderr[-1000:]}\n{tail}"
            )
    elif running != port:
        raise PostgresError(
            f"the cluster in {server.data_dir} already runs on port {running}, not {port}: "
            "use that port or stop it first (stop_postgres)"
        )
    _ensure_database(server, database)
    return server


def _ensure_database(server: PostgresServer, database: str) -> None:
    psql = [str(pg_bin() / "psql"), "-h", server.host, "-p", str(server.port), "-U", DB_USER]
    query = f"SELECT 1 FROM pg_database WHERE datname = '{database}'"
    found = _run([*psql, "-d", "postgres", "-tAc", query])
    if found.returncode != 0:
        raise PostgresError(f"cannot reach PostgreSQL on port {server.port}: {found.stderr}")
    if found.stdout.strip() == "1":
        return
    createdb = [str(pg_bin() / "createdb"), "-h", server.host, "-p", str(server.port)]
    created = _run([*createdb, "-U", DB_USER, database])
    if created.returncode != 0:
        raise PostgresError(f"createdb {database} failed: {created.stderr}")


def stop_postgres(root: Path, *, timeout_s: float = 60.0) -> bool:
    """Stop the cluster under ``root`` if it runs; whether it was running."""
    data_dir = root.resolve() / "data"
    if not (data_dir / "PG_VERSION").exists() or _running_port(data_dir) is None:
        return False
    stopped = _run(
        [str(pg_bin() / "pg_ctl"), "stop", "-D", str(data_dir), "-m", "fast", "-w"],
        timeout_s=timeout_s,
    )
    if stopped.returncode != 0:
        raise PostgresError(f"pg_ctl stop in {data_dir} failed: {stopped.stderr}")
    return True
