"""Run ``scripts/demo_loop.py`` (the loop of ``make demo``) in a home of its own.

Shared by the closed-loop tests: each gets a copy of the session's migrated Airflow
metadata DB (:func:`tests.dags.conftest.airflow_template`), the demo's compressed time,
a free port, and the timeline JSON the loop wrote. :func:`loop_fixture` makes a test
module's ``loop`` fixture: one run per module, from :data:`START` with a first model
trained from :data:`TRAIN_START`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from driftline.core.settings import Settings
from driftline.orchestration.processes import free_port, run_child
from tests.dags.conftest import REPO, airflow_env, copy_airflow_db

#: What a loop run gives its tests: the settings of its home and the timeline it wrote.
LoopRun = tuple[Settings, dict[str, Any]]
#: The first simulated day (the first day of data): 14 days before :data:`TRAIN_START`,
#: so the first model trains on complete look-back features only.
START = date(2025, 12, 18)
#: The first training day of the first model (``--train-start``).
TRAIN_START = date(2026, 1, 1)

#: ``make demo``'s compressed time (see the Makefile's ``DEMO_ENV``).
DEMO_ENV = {
    "DRIFTLINE_LABEL_MATURITY_DAYS": "3",
    "DRIFTLINE_VALID_DAYS": "1",
    "DRIFTLINE_HOLDOUT_DAYS": "1",
    "DRIFTLINE_SERVE_POLL_SECONDS": "1",
    "DRIFTLINE_SERVE_CANARY_WEIGHT": "0.3",
}

#: What the loop tests change beyond ``make demo``: nothing reads the GX data docs
#: index, and GX rereads each listed result on every docs update (about 8 ms each), so
#: a short index keeps a 30-day history's validations from slowing day by day.
TEST_ONLY_ENV = {"DRIFTLINE_GX_DOCS_INDEX_LIMIT": "3"}


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
        **TEST_ONLY_ENV,
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


def loop_fixture(
    name: str, args: Sequence[str], env: Mapping[str, str], *, timeout_s: float
) -> Callable[..., LoopRun]:
    """A module-scoped ``loop`` fixture: one :func:`run_loop` run for the whole module.

    The loop starts on :data:`START` with ``--train-start`` :data:`TRAIN_START` before
    ``args``, in a fresh temporary home named after ``name``. The test module must see
    the session fixture ``airflow_template`` (import it from ``tests.dags.conftest``).
    """

    @pytest.fixture(scope="module")
    def loop(tmp_path_factory: pytest.TempPathFactory, airflow_template: Path) -> LoopRun:
        """Run the loop once; return its settings and the timeline it wrote."""
        home = tmp_path_factory.mktemp(name)
        command = ["--train-start", TRAIN_START.isoformat(), *args]
        return run_loop(home, airflow_template, command, start=START, env=env, timeout_s=timeout_s)

    return loop
