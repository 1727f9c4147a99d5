"""Run ``scripts/demo_loop.py`` (the loop of ``make demo``) in a home of its own.

Shared by the closed-loop tests: each gets a copy of the session's migrated Airflow
metadata DB (:func:`tests.dags.conftest.airflow_template`), the demo's compressed time,
a free port, and the timeline JSON the loop wrote.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

from driftline.core.settings import Settings
from driftline.orchestration.processes import free_port, run_child
from tests.dags.conftest import REPO, airflow_env, copy_airflow_db

#: ``make demo``'s compressed time (see the Makefile's ``DEMO_ENV``).
DEMO_ENV = {
    "DRIFTLINE_LABEL_MATURITY_DAYS": "3",
    "DRIFTLINE_VALID_DAYS": "1",
    "DRIFTLINE_HOLDOUT_DAYS": "1",
    "DRIFTLINE_SERVE_POLL_SECONDS": "1",
    "DRIFTLINE_SERVE_CANARY_WEIGHT": "0.3",
}


def run_loop(
    home: Path,
    template: Path,
    args: Sequence[str],
    *,
    start: date,
    env: Mapping[str, str],
    timeout_s: float,
) -> tuple[Settings, dict[str, Any]]:
    """Run the loop with ``args`` from ``start`` in ``home``; its settings and timeline.

    ``start`` is the first simulated day, declared the first day of data (as ``make
    demo`` does); ``env`` adds to :data:`DEMO_ENV`. The loop runs in a process group of
    its own: on a timeout (this one or pytest's) the whole group gets SIGTERM, and the
    loop stops its scoring service first. Its port is a free one, so an earlier run's
    leftover cannot answer in its place.

    Raises:
        AssertionError: The loop failed (with the end of its log).
    """
    copy_airflow_db(template, home)
    day = start.isoformat()
    full_env = {
        **airflow_env(home),
        **DEMO_ENV,
        "DRIFTLINE_DATA_START": day,
        "DRIFTLINE_SIMULATION_START": day,
        **env,
    }
    out, log = home / "timeline.json", home / "demo.log"
    command = [
        sys.executable,
        str(REPO / "scripts" / "demo_loop.py"),
        "--start",
        day,
        *args,
        "--port",
        str(free_port()),
        "--out",
        str(out),
    ]
    code = run_child(command, timeout_s=timeout_s, env=full_env, cwd=REPO, log_path=log)
    assert code == 0, log.read_text(errors="replace")[-10000:]
    return Settings(home=home / "state"), json.loads(out.read_text())


def events(timeline: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """The timeline's events called ``name``, in order."""
    return [e for e in timeline["events"] if e["event"] == name]
