"""Run an Airflow DAG for a range of data intervals, in this process (``dag.test``).

This is how ``make demo`` and the tests run the real DAGs on the embedded SQLite
metadata database without a scheduler: one DAG run per day, oldest first, each
with the data interval ``[day, day + 1)``. It wires nothing of its own; the DAG's
tasks call driftline. Needs ``AIRFLOW_HOME`` and ``AIRFLOW__CORE__DAGS_FOLDER``
set and ``airflow db migrate`` + ``airflow dags reserialize`` done (``make airflow-init``).

Usage: python scripts/run_dag.py DAG_ID START_DAY END_DAY [--conf JSON]
(END_DAY exclusive), or python scripts/run_dag.py DAG_ID --conf JSON for one manual
run of a DAG without a data interval (such as ``train_register``, whose window is in
its params). Exits non-zero if any run fails, after printing each run's state.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, timedelta
from typing import Any


def load_dag(dag_id: str) -> Any:
    """The DAG ``dag_id`` from the configured dags folder."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.settings import DAGS_FOLDER

    bag = DagBag(dag_folder=DAGS_FOLDER)
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise SystemExit(f"no DAG {dag_id!r} in {DAGS_FOLDER}")
    return dag


def run_once(dag_id: str, conf: dict[str, object]) -> str:
    """One manual run of ``dag_id`` with ``conf``; returns its state."""
    dag_run = load_dag(dag_id).test(run_conf=conf or None)
    print(f"{dag_id} manual run: {dag_run.state}", flush=True)
    return str(dag_run.state)


def run(dag_id: str, start: date, end: date, conf: dict[str, object]) -> list[tuple[date, str]]:
    """Run ``dag_id`` once per day in ``[start, end)``; returns (day, state) pairs."""
    dag = load_dag(dag_id)
    states = []
    day = start
    while day < end:
        # For a data-interval timetable a manual run's interval is the one ending at
        # its logical date, so the run for ``day`` is dated the next midnight.
        logical = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)
        dag_run = dag.test(logical_date=logical, run_after=logical, run_conf=conf or None)
        states.append((day, str(dag_run.state)))
        print(f"{dag_id} {day.isoformat()}: {dag_run.state}", flush=True)
        day += timedelta(days=1)
    return states


def main() -> int:
    """Parse arguments, run the DAG for every day, and return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id")
    parser.add_argument("start", type=date.fromisoformat, nargs="?")
    parser.add_argument("end", type=date.fromisoformat, nargs="?")
    parser.add_argument("--conf", type=json.loads, default={})
    args = parser.parse_args()
    if args.start is None or args.end is None:
        return 0 if run_once(args.dag_id, args.conf) == "success" else 1
    states = run(args.dag_id, args.start, args.end, args.conf)
    return 0 if all(state == "success" for _, state in states) else 1


if __name__ == "__main__":
    sys.exit(main())
