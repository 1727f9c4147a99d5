"""An embedded Airflow (SQLite metadata DB) in a temporary home, driven by subprocesses.

Airflow reads its configuration when first imported, so each run happens in a fresh
process with ``AIRFLOW_HOME`` and the dags folder set, exactly as ``make demo`` does.

``airflow db migrate`` + ``airflow dags reserialize`` run once per test run (shared by
the xdist workers) into a template home; each test gets a copy of the template's metadata
database (``airflow.db``) in its own home. Only the database is copied: Airflow writes a
fresh ``airflow.cfg`` into the new home (the template's holds the template's paths).
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def airflow_env(home: Path) -> dict[str, str]:
    """Environment of an isolated embedded Airflow + driftline state under ``home``."""
    return {
        **os.environ,
        "DRIFTLINE_HOME": str(home / "state"),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }


Runner = Callable[..., subprocess.CompletedProcess[str]]


def runner(home: Path) -> Runner:
    """Run commands in the embedded Airflow + driftline state of ``home``."""
    env = airflow_env(home)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(args), env=env, cwd=REPO, capture_output=True, text=True, timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    return run


def migrate(home: Path) -> None:
    """``airflow db migrate`` and ``airflow dags reserialize`` in ``home``."""
    run = runner(home)
    run(str(BIN / "airflow"), "db", "migrate")
    run(str(BIN / "airflow"), "dags", "reserialize")


def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary folder of this test run that every xdist worker sees.

    Under xdist each worker's base temporary folder is ``<run>/popen-gwN``: their parent
    belongs to this run only. Without xdist the base folder itself is this run's.
    """
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def airflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A home whose Airflow metadata DB is migrated and holds the serialized DAGs.

    Built once per test run, not once per xdist worker: the first worker to need it
    migrates under a file lock, the others wait and reuse it (a migration plus a
    reserialize costs two Airflow processes, about 10 s of CPU). Every worker runs with
    the same environment, so the database is the one each would have built. Nothing runs
    in it after that: tests copy its database (:func:`copy_airflow_db`).
    """
    root = shared_root(tmp_path_factory)
    home = root / "airflow-template"
    done = home / "migrated"
    with open(root / "airflow-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not done.is_file():
                shutil.rmtree(home, ignore_errors=True)  # a worker that failed midway
                home.mkdir()
                migrate(home)
                done.touch()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return home


def copy_airflow_db(template: Path, home: Path) -> None:
    """Give ``home`` a copy of the migrated, reserialized metadata DB of ``template``."""
    (home / "airflow").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template / "airflow" / "airflow.db", home / "airflow" / "airflow.db")


@pytest.fixture
def airflow_home(tmp_path: Path, airflow_template: Path) -> tuple[Path, Runner]:
    """A migrated, reserialized embedded Airflow and a runner for commands in it."""
    copy_airflow_db(airflow_template, tmp_path)
    return tmp_path, runner(tmp_path)
