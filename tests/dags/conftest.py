"""An embedded Airflow (SQLite metadata DB) in a temporary home, driven by subprocesses.

Airflow reads its configuration when first imported, so each run happens in a fresh
process with ``AIRFLOW_HOME`` and the dags folder set, exactly as ``make demo`` does.
"""

from __future__ import annotations

import os
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


@pytest.fixture
def airflow_home(tmp_path: Path) -> tuple[Path, Runner]:
    """A migrated, reserialized embedded Airflow and a runner for commands in it."""
    env = airflow_env(tmp_path)

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            list(args), env=env, cwd=REPO, capture_output=True, text=True, timeout=600
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{args} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    run(str(BIN / "airflow"), "db", "migrate")
    run(str(BIN / "airflow"), "dags", "reserialize")
    return tmp_path, run
