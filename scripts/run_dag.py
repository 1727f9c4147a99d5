"""Run an Airflow DAG for a range of data intervals, in this process (``dag.test``).

This is how ``make demo`` and the tests run the real DAGs on the embedded SQLite
metadata database without a scheduler: one DAG run per day, oldest first, each
with the data interval ``[day, day + 1)``. It wires nothing of its own; the DAG's
tasks call driftline. Needs ``AIRFLOW_HOME`` and ``AIRFLOW__CORE__DAGS_FOLDER``
set and ``airflow db migrate`` + ``airflow dags reserialize`` done (``make airflow-init``).
The runs are :mod:`driftline.orchestration.dag_runs`; this script is their command line.

Usage: python scripts/run_dag.py DAG_ID START_DAY END_DAY [--conf JSON]
(END_DAY exclusive), or python scripts/run_dag.py DAG_ID --conf JSON for one manual
run of a DAG without a data interval (such as ``train_register``, whose window is in
its params). Exits non-zero if any run fails, after printing each run's state.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from driftline.orchestration.dag_runs import DagRunError, run_days, run_manual


def _say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    """Parse arguments, run the DAG for every day, and return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dag_id")
    parser.add_argument("start", type=date.fromisoformat, nargs="?")
    parser.add_argument("end", type=date.fromisoformat, nargs="?")
    parser.add_argument("--conf", type=json.loads, default={})
    args = parser.parse_args()
    try:
        if args.start is None or args.end is None:
            dag_run = run_manual(args.dag_id, args.conf, say=_say)
            return 0 if str(dag_run.state) == "success" else 1
        states = run_days(args.dag_id, args.start, args.end, args.conf, say=_say)
    except DagRunError as error:
        raise SystemExit(str(error)) from error
    return 0 if all(state == "success" for _, state in states) else 1


if __name__ == "__main__":
    sys.exit(main())
