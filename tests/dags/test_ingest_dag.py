"""The real ``ingest_validate_materialize`` DAG on an embedded Airflow (SQLite)."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.dags.conftest import BIN, REPO, Runner
from tests.lakes import lake_snapshot, online_snapshot

pytestmark = pytest.mark.slow
DAG = "ingest_validate_materialize"


@pytest.fixture(autouse=True)
def _data_starts_with_the_first_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """The runs begin on 2026-01-02 (the simulated 01-01 is never ingested): data starts there."""
    monkeypatch.setenv("DRIFTLINE_DATA_START", "2026-01-02")


def _simulate(run: Runner, *extra: str) -> None:
    run(
        str(BIN / "driftline"),
        "simulate",
        "--start",
        "2026-01-01",
        "--end",
        "2026-01-04",
        "--rows-per-day",
        "1000",
        *extra,
    )


def _run_dag(run: Runner, start: str, end: str, check: bool = True) -> str:
    done = run(sys.executable, str(REPO / "scripts" / "run_dag.py"), DAG, start, end, check=check)
    return done.stdout


def test_two_days_then_rerun_is_idempotent(airflow_home: tuple[Path, Runner]) -> None:
    home, run = airflow_home
    state = home / "state"
    _simulate(run)
    out = _run_dag(run, "2026-01-02", "2026-01-04")
    assert f"{DAG} 2026-01-02: success" in out and f"{DAG} 2026-01-03: success" in out
    lake_before, online_before = lake_snapshot(state), online_snapshot(state)
    assert any("features/transaction_features/dt=2026-01-03" in k for k in lake_before)
    assert len(online_before) > 100

    assert f"{DAG} 2026-01-03: success" in _run_dag(run, "2026-01-03", "2026-01-04")

    assert lake_snapshot(state) == lake_before
    assert online_snapshot(state) == online_before
    for name in lake_before:
        ids = pq.read_table(state / name, columns=["transaction_id"])["transaction_id"]
        assert len(ids) == len(set(ids.to_pylist())), f"duplicate rows in {name}"


def test_bad_batch_fails_the_run_and_downstream_never_runs(
    airflow_home: tuple[Path, Runner],
) -> None:
    home, run = airflow_home
    state = home / "state"
    _simulate(run, "--bad-batch", "duplicate_ids@2026-01-03")
    assert "success" in _run_dag(run, "2026-01-02", "2026-01-03")
    good = lake_snapshot(state)

    failed = run(
        sys.executable,
        str(REPO / "scripts" / "run_dag.py"),
        DAG,
        "2026-01-03",
        "2026-01-04",
        check=False,
    )

    assert failed.returncode != 0
    assert f"{DAG} 2026-01-03: failed" in failed.stdout
    log = failed.stdout + failed.stderr
    assert "expect_column_values_to_be_unique(transaction_id)" in log
    assert (state / "lake" / "quarantine" / "transactions" / "dt=2026-01-03").is_dir()
    assert not (state / "lake" / "features" / "transaction_features" / "dt=2026-01-03").exists()
    after = lake_snapshot(state)
    assert {k: after[k] for k in good} == good  # earlier partitions untouched
    assert not (state / "lake" / "raw" / "transactions" / "dt=2026-01-03").exists()
