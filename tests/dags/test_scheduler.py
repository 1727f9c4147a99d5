"""The DAGs under the real scheduler: REST backfills on PostgreSQL, not ``dag.test``.

Each test starts the real scheduler profile (:mod:`driftline.orchestration.airflow_stack`:
``airflow scheduler``, ``dag-processor``, ``triggerer`` and ``api-server`` with the
LocalExecutor) on a PostgreSQL metadata DB of its own
(:mod:`driftline.orchestration.postgres`), on free ports, in its own state folder, over
a few simulated days of a few hundred rows; every process is stopped at the end. Runs
are created the way a user creates them: the DAG is unpaused and backfills are posted
to ``/api/v2/backfills``.

The short case (in ``make test``) backfills one day. The long one (marker ``scheduler``,
``make test-scheduler``) backfills four days, then reprocesses them, and checks that the
two passes left byte-identical partitions and online values, no duplicate rows, the
online store equal to the lake's latest features per entity, and every feature
partition equal to one computed with its whole look-back in place.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.orchestration import assets
from driftline.orchestration.airflow_rest import AirflowRest
from driftline.orchestration.airflow_stack import AirflowStack, StackConfig, airflow_stack
from driftline.orchestration.postgres import ensure_postgres, stop_postgres
from driftline.orchestration.processes import free_port, group_alive
from tests.dags.conftest import BIN, REPO
from tests.lakes import assert_online_equals_lake, lake_snapshot, online_snapshot

pytestmark = pytest.mark.slow
DAG = "ingest_validate_materialize"
MONITOR = "monitor_drift"
FIRST = date(2026, 1, 1)
ROWS = 300
TERMINAL = {"success", "failed"}


@dataclass
class Scheduler:
    """A running profile and the driftline state its tasks work on."""

    stack: AirflowStack
    state: Path

    @property
    def rest(self) -> AirflowRest:
        """The REST client of the profile's API server (all-admins: no login)."""
        return AirflowRest(self.stack.api_url)


def _simulate(state: Path, days: int) -> None:
    end = FIRST + timedelta(days=days)
    done = subprocess.run(
        [
            str(BIN / "driftline"),
            "simulate",
            "--start",
            str(FIRST),
            "--end",
            str(end),
            "--rows-per-day",
            str(ROWS),
        ],
        env={**os.environ, "DRIFTLINE_HOME": str(state)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[Scheduler]:
    """The real scheduler profile on PostgreSQL over four simulated landing days."""
    state = tmp_path / "state"
    _simulate(state, days=4)
    # PostgreSQL runs as the postgres user when we are root: its folder must be
    # reachable by that user, which pytest's private tmp folder is not.
    pg_root = Path(tempfile.mkdtemp(prefix="driftline-pg-"))
    pg_root.chmod(0o755)
    try:
        server = ensure_postgres(pg_root, free_port())
        config = StackConfig(
            airflow_home=tmp_path / "airflow",
            dags_folder=REPO / "dags",
            db_url=server.url(),
            api_port=free_port(),
            all_admins=True,
            env={"DRIFTLINE_HOME": str(state), "DRIFTLINE_DATA_START": FIRST.isoformat()},
        )
        with airflow_stack(config, log_dir=tmp_path / "logs") as stack:
            yield Scheduler(stack, state)
        assert not any(group_alive(child.pgid) for child in stack.children.values())
    finally:
        stop_postgres(pg_root)
        shutil.rmtree(pg_root, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Driving the scheduler
# --------------------------------------------------------------------------------------


def _backfill(cluster: Scheduler, first: date, last: date, **options: Any) -> dict[str, Any]:
    """A backfill of the ingest DAG, one run at a time (``reprocess_behavior`` "failed",
    which also creates the missing runs, unless ``options`` say otherwise)."""
    return cluster.rest.backfill(DAG, first, last, **options)


def _runs(cluster: Scheduler, dag_id: str = DAG) -> list[dict[str, Any]]:
    return cluster.rest.runs(dag_id, order_by="logical_date", limit=100)


def _wait_monitor_run(cluster: Scheduler) -> dict[str, Any]:
    """The first ``monitor_drift`` run the asset event started, once it has ended."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        cluster.stack.check_alive()
        runs = [r for r in _runs(cluster, MONITOR) if r["run_type"] == "asset_triggered"]
        if runs and runs[0]["state"] in TERMINAL:
            return runs[0]
        time.sleep(3)
    raise AssertionError(f"no asset-triggered {MONITOR} run ended: {_runs(cluster, MONITOR)}")


def _consumed_days(cluster: Scheduler, run: dict[str, Any]) -> list[str]:
    """The ``extra.day`` of each asset event that started ``run``."""
    return cluster.rest.consumed_days(MONITOR, run["dag_run_id"])


def _failure_report(cluster: Scheduler, runs: list[dict[str, Any]]) -> str:
    lines = []
    for run in runs:
        if run["state"] == "success":
            continue
        tis = cluster.rest.task_instances(run["dag_id"], run["dag_run_id"])
        lines.append(f"{run['dag_run_id']}: {run['state']}: ")
        lines.extend(f"  {ti['task_id']}: {ti['state']}" for ti in tis)
    logs = sorted((cluster.stack.config.airflow_home / "logs").rglob("*.log"))
    failed = [p for p in logs if "attempt" in p.name and "Traceback" in p.read_text()]
    for path in failed[:3]:
        lines.append(f"--- {path}\n{path.read_text()[-2500:]}")
    return "\n".join(lines)


def _wait_backfill(cluster: Scheduler, backfill_id: int, days: list[date]) -> list[dict[str, Any]]:
    """Wait until the backfill completed; its runs (one per day, oldest first)."""
    deadline = time.monotonic() + 240 * len(days) + 180
    while time.monotonic() < deadline:
        cluster.stack.check_alive()
        done = cluster.rest.call("GET", f"/api/v2/backfills/{backfill_id}")["completed_at"]
        runs = [r for r in _runs(cluster) if r["run_type"] == "backfill"]
        mine = [r for r in runs if _day(r) in days]
        if done and all(r["state"] in TERMINAL for r in mine):
            assert [_day(r) for r in mine] == days
            assert all(r["state"] == "success" for r in mine), _failure_report(cluster, mine)
            return mine
        time.sleep(3)
    raise AssertionError(
        f"backfill {backfill_id} not done in time:\n{_failure_report(cluster, mine)}"
    )


def _day(run: dict[str, Any]) -> date:
    return datetime.fromisoformat(run["data_interval_start"]).date()


def _assert_one_at_a_time(runs: list[dict[str, Any]]) -> None:
    """The backfill's max_active_runs held: no two runs were running at once."""
    spans = sorted(
        (datetime.fromisoformat(r["start_date"]), datetime.fromisoformat(r["end_date"]))
        for r in runs
    )
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"runs overlapped: {spans}"


def _ingested_days(cluster: Scheduler) -> list[str]:
    answer = cluster.rest.call("GET", "/api/v2/assets?limit=100")
    asset = next(a for a in answer["assets"] if a["uri"] == assets.INGESTED_DAYS)
    events = cluster.rest.call("GET", f"/api/v2/assets/events?asset_id={asset['id']}&limit=100")
    return sorted(str(event["extra"]["day"]) for event in events["asset_events"])


def _listening_addresses(cluster: Scheduler) -> set[str]:
    """Local addresses of the TCP sockets the profile's processes listen on."""
    groups = {child.pgid for child in cluster.stack.children.values()}
    inodes: set[str] = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[-1].split()
            if int(fields[2]) not in groups:
                continue
            for fd in (proc / "fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                addresses.add(parts[1].split(":")[0])
    return addresses


# --------------------------------------------------------------------------------------
# What the runs left
# --------------------------------------------------------------------------------------


def _reference_features(tmp_path: Path, scheduled: Path, days: list[date]) -> dict[str, str]:
    """Feature partitions computed day by day with every look-back day in place."""
    from driftline.core.interval import Interval
    from driftline.core.settings import Settings
    from driftline.data.features import build_features
    from driftline.data.ingest import ingest, publish_validated

    reference = tmp_path / "reference"
    shutil.copytree(scheduled / "lake" / "landing", reference / "lake" / "landing")
    settings = Settings(home=reference, data_start=FIRST)
    span = Interval.parse(days[0], days[-1] + timedelta(days=1))
    for dataset in ("transactions", "labels"):
        ingest(dataset, span, settings)
        publish_validated(dataset, span, settings)
    for day in days:
        build_features(Interval.for_day(day), settings)
    return {k: v for k, v in lake_snapshot(reference).items() if "features" in k}


# --------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------


def test_a_rest_backfill_runs_on_postgres_bound_to_loopback(scheduler: Scheduler) -> None:
    scheduler.rest.unpause(MONITOR)
    scheduler.rest.unpause(DAG)
    backfill = _backfill(scheduler, FIRST, FIRST)
    assert backfill["max_active_runs"] == 1

    (run,) = _wait_backfill(scheduler, backfill["id"], [FIRST])

    assert run["state"] == "success"
    assert (
        scheduler.state / "lake" / "features" / "transaction_features" / "dt=2026-01-01"
    ).is_dir()
    assert _ingested_days(scheduler) == ["2026-01-01"]
    # Catch-up is off: unpausing started no run for the days since start_date.
    scheduled = [r for r in _runs(scheduler) if r["run_type"] == "scheduled"]
    assert len(scheduled) <= 1 and all(_day(r) > date(2026, 6, 1) for r in scheduled)
    # Ordered by data: monitoring ran because, and after, the day's ingest succeeded,
    # for that day only (no champion yet, so it judged nothing and asked for nothing).
    monitor = _wait_monitor_run(scheduler)
    assert monitor["state"] == "success", _failure_report(scheduler, [monitor])
    path = f"/api/v2/dags/{DAG}/dagRuns/{run['dag_run_id']}/taskInstances/materialize_features"
    announced = scheduler.rest.call("GET", path)  # the task whose outlet is the day's asset event
    assert monitor["start_date"] > announced["end_date"]
    assert _consumed_days(scheduler, monitor) == ["2026-01-01"]
    assert len(_runs(scheduler, MONITOR)) == 1
    listening = _listening_addresses(scheduler)
    assert listening and listening <= {"0100007F"}, f"not only 127.0.0.1: {listening}"


@pytest.mark.scheduler
@pytest.mark.timeout(2400)  # two backfills of four days, Spark and Feast in each task
def test_backfill_then_reprocessing_backfill_give_identical_correct_data(
    scheduler: Scheduler, tmp_path: Path
) -> None:
    days = [FIRST + timedelta(days=n) for n in range(4)]
    scheduler.rest.unpause(DAG)

    started = time.monotonic()
    first = _wait_backfill(scheduler, _backfill(scheduler, days[0], days[-1])["id"], days)
    first_s = time.monotonic() - started
    _assert_one_at_a_time(first)
    lake_first, online_first = lake_snapshot(scheduler.state), online_snapshot(scheduler.state)
    for dataset in ("transaction_features", "fresh"):  # one partition a day of each
        assert len([k for k in lake_first if f"features/{dataset}/" in k]) == len(days)

    started = time.monotonic()
    again = _backfill(scheduler, days[0], days[-1], reprocess_behavior="completed")
    second = _wait_backfill(scheduler, again["id"], days)
    second_s = time.monotonic() - started
    print(f"first backfill {first_s:.0f} s, reprocessing backfill {second_s:.0f} s")
    _assert_one_at_a_time(second)
    assert min(r["start_date"] for r in second) > max(r["end_date"] for r in first)

    assert lake_snapshot(scheduler.state) == lake_first
    assert online_snapshot(scheduler.state) == online_first
    for name in lake_first:
        ids = pq.read_table(scheduler.state / name, columns=["transaction_id"])["transaction_id"]
        assert len(ids) == len(set(ids.to_pylist())), f"duplicate rows in {name}"
    assert_online_equals_lake(Settings(home=scheduler.state), [Interval.for_day(d) for d in days])
    # No partition was built on an incomplete look-back: each equals the one built with
    # the whole history in place.
    assert {k: v for k, v in lake_first.items() if "features" in k} == _reference_features(
        tmp_path, scheduler.state, days
    )
    assert _ingested_days(scheduler) == sorted([d.isoformat() for d in days] * 2)
