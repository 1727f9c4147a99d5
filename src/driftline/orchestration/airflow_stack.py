"""The real Airflow scheduler profile: scheduler, DAG processor, triggerer, API server.

``make airflow-ui`` and the scheduler tests run Airflow the way a user does in
production, not through ``dag.test``: four long-lived processes with the LocalExecutor
on a PostgreSQL metadata DB (:mod:`driftline.orchestration.postgres`), sharing one
``AIRFLOW_HOME``, dags folder and driftline state. Everything listens on loopback only:
the API server (UI, REST API, task execution API) on the given port, PostgreSQL on its
own; the scheduler and the triggerer start no log server (``--skip-serve-logs``: their
log servers bind every interface and have no host setting; with the LocalExecutor the
API server reads task logs from the local log folder).

The processes are children this process owns (:mod:`driftline.orchestration.processes`):
each in its own process group, stopped however the owner ends. SQLite stays the metadata
DB of the ``dag.test`` paths (demo, DAG tests): only these processes get the PostgreSQL
URL, through the environment.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from driftline.core.logs import LIBRARY_LOG_ENV
from driftline.orchestration.processes import (
    Child,
    ProcessStartError,
    ensure_port_free,
    http_ok,
    run_child,
    start_child,
)

#: The processes of the profile, as ``airflow`` subcommands.
COMMANDS: dict[str, tuple[str, ...]] = {
    "scheduler": ("scheduler", "--skip-serve-logs"),
    "dag-processor": ("dag-processor",),
    "triggerer": ("triggerer", "--skip-serve-logs"),
}


@dataclass(frozen=True)
class StackConfig:
    """Where the profile keeps its state and where it listens.

    Attributes:
        airflow_home: ``AIRFLOW_HOME`` (config, logs, the generated UI passwords).
        dags_folder: The DAGs to schedule.
        db_url: SQLAlchemy URL of the metadata DB (PostgreSQL).
        api_port: Port of the API server (UI and REST API) on ``host``.
        host: Interface everything binds (loopback).
        all_admins: Every request is an admin without logging in (tests only).
        env: More environment for every process (driftline settings, Airflow tuning).
    """

    airflow_home: Path
    dags_folder: Path
    db_url: str
    api_port: int
    host: str = "127.0.0.1"
    all_admins: bool = False
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        """Base URL of the API server."""
        return f"http://{self.host}:{self.api_port}"


def _secret(airflow_home: Path, name: str) -> str:
    """A secret shared by the processes, generated once and kept in ``airflow_home``.

    The API server signs the tokens the scheduler hands to task processes and checks
    them: every process must hold the same key, across restarts too.
    """
    path = airflow_home / f".{name}"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def stack_env(config: StackConfig, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every process of the profile (over ``base``, default this one)."""
    binaries = str(Path(sys.executable).parent)
    env = dict(os.environ if base is None else base)
    # Third-party output goes through logging in every task (no progress bars, MLflow's
    # INFO at info level), unless the caller chose otherwise.
    env.update({k: v for k, v in LIBRARY_LOG_ENV.items() if k not in env})
    env.update(
        {
            "AIRFLOW_HOME": str(config.airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(config.dags_folder),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": config.db_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{config.api_url}/execution/",
            "AIRFLOW__API__HOST": config.host,
            "AIRFLOW__API__PORT": str(config.api_port),
            "AIRFLOW__API__BASE_URL": config.api_url,
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__API_AUTH__JWT_SECRET": _secret(config.airflow_home, "jwt_secret"),
            "AIRFLOW__API__SECRET_KEY": _secret(config.airflow_home, "api_secret_key"),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": str(config.all_admins),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin",
            # Nothing else binds a port: no scheduler health server, no log servers.
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
            "PATH": f"{binaries}{os.pathsep}{env.get('PATH', '')}",
        }
    )
    env.update(config.env)
    return env


def airflow_binary() -> str:
    """The ``airflow`` command of this environment."""
    return str(Path(sys.executable).with_name("airflow"))


def prepare(config: StackConfig, env: Mapping[str, str], log_dir: Path) -> None:
    """Migrate the metadata DB and serialize the DAGs (so they are known at once).

    Raises:
        ProcessStartError: A step failed (the end of its log is in the message).
    """
    for step in (("db", "migrate"), ("dags", "reserialize")):
        log_path = log_dir / f"{'-'.join(step)}.log"
        code = run_child(
            [airflow_binary(), *step], timeout_s=600, env=env, log_path=log_path, name=step[0]
        )
        if code != 0:
            tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
            raise ProcessStartError(f"airflow {' '.join(step)} failed ({code}):\n{tail}")


@dataclass
class AirflowStack:
    """The running profile."""

    config: StackConfig
    env: dict[str, str]
    children: dict[str, Child]

    @property
    def api_url(self) -> str:
        """Base URL of the API server."""
        return self.config.api_url

    def check_alive(self) -> None:
        """Raise :class:`ProcessStartError` when a process of the profile has exited."""
        for name, child in self.children.items():
            code = child.process.poll()
            if code is not None:
                raise ProcessStartError(
                    f"airflow {name} exited with code {code}; log {child.log_path}:\n"
                    f"{child.log_tail()}"
                )


@contextlib.contextmanager
def airflow_stack(
    config: StackConfig,
    *,
    log_dir: Path,
    base_env: Mapping[str, str] | None = None,
    timeout_s: float = 240.0,
) -> Iterator[AirflowStack]:
    """Migrate, start the four processes, wait until the API server answers; yield.

    Every process is stopped when the block ends, whatever ends it.

    Raises:
        ProcessStartError: The API port is taken, a step or process failed, or the API
            server did not answer in time.
    """
    ensure_port_free(config.api_port, config.host)
    env = stack_env(config, base_env)
    prepare(config, env, log_dir)
    with contextlib.ExitStack() as stack:
        children: dict[str, Child] = {}
        api = ("api-server", "--host", config.host, "--port", str(config.api_port))
        for name, args in {**COMMANDS, "api-server": api}.items():
            children[name] = stack.enter_context(
                start_child(
                    [airflow_binary(), *args],
                    name=f"airflow {name}",
                    env=env,
                    log_path=log_dir / f"{name}.log",
                )
            )
        running = AirflowStack(config, env, children)
        healthy = http_ok(f"{config.api_url}/api/v2/monitor/health")

        def ready() -> bool:
            running.check_alive()
            return healthy()

        children["api-server"].wait_ready(ready, timeout_s, poll_s=1.0)
        yield running
