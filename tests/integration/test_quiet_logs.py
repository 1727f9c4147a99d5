"""Task logs stay clean: third-party INFO goes through logging, nothing draws progress bars.

Airflow's task runner records a task's stderr at level ``error``. These tests run a Spark
feature job and MLflow calls in a fresh process whose logging (like a task's) has its own
channel, stdout here, and check what reaches stderr.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

from driftline.core.interval import Interval
from driftline.core.logs import LIBRARY_LOG_ENV
from driftline.core.settings import Settings
from driftline.simulator import SimulatorConfig
from tests.conftest import REPO
from tests.lakes import publish_days

#: Logging as a task runner sets it up: records on their own channel (stdout here).
PRELUDE = """
import logging, sys
logging.basicConfig(
    level=logging.INFO, stream=sys.stdout, format="LOG %(levelname)s %(name)s: %(message)s"
)
"""
INFO_LINE = re.compile(r"\bINFO\b")
PROGRESS = re.compile(r"\[Stage \d+|\r|█|\d+%\|")


def _run(code: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in LIBRARY_LOG_ENV}
    done = subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(code)],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _assert_clean(stderr: str) -> None:
    noisy = [line for line in stderr.splitlines() if INFO_LINE.search(line)]
    assert not noisy, "INFO lines on stderr:\n" + "\n".join(noisy[:20])
    assert not PROGRESS.search(stderr), f"progress output on stderr:\n{stderr[-2000:]}"


@pytest.mark.slow
def test_spark_feature_job_and_mlflow_write_no_info_and_no_progress_to_stderr(
    settings: Settings,
) -> None:
    publish_days(
        settings, Interval.parse("2026-01-01", "2026-01-03"), SimulatorConfig(rows_per_day=300)
    )
    done = _run(
        """
        from driftline.core.interval import Interval
        from driftline.core.settings import get_settings
        from driftline.data.features import build_features
        from driftline.lifecycle import registry

        print("rows", build_features(Interval.parse("2026-01-01", "2026-01-03")).rows)
        print("experiment", registry.experiment_id(get_settings()))
        """
    )
    assert "rows {'2026-01-01'" in done.stdout and "experiment" in done.stdout
    _assert_clean(done.stderr)
    # MLflow's INFO lines are not lost: they arrive through logging, at INFO.
    assert "LOG INFO mlflow." in done.stdout


def test_mlflow_imported_first_still_logs_through_logging() -> None:
    done = _run(
        """
        import mlflow  # installs MLflow's own stderr handler
        from driftline.core.logs import route_library_logs

        route_library_logs()
        logging.getLogger("mlflow.tracking.fluent").info("experiment created")
        """
    )
    assert "LOG INFO mlflow.tracking.fluent: experiment created" in done.stdout
    assert "experiment created" not in done.stderr
    _assert_clean(done.stderr)
