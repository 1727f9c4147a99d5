"""The closed loop of ``make demo``: backfill, first champion, serving, drift, retrain, canary.

The loop itself is :mod:`driftline.orchestration.demo` (DAG runs with ``dag.test()`` on
the embedded SQLite metadata DB, in this process; the scoring service a child process it
owns, checked and always stopped); this script is its command line.

Usage: python scripts/demo_loop.py --start 2026-01-01 --serve-from 2026-01-17 \\
    --end 2026-01-30 --train-start 2026-01-02 --drift new_fraud_pattern@2026-01-20 \\
    [--rows 4000 ...]
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from driftline.orchestration.dag_runs import DagRunError
from driftline.orchestration.demo import DemoError, DemoOptions, narrate_to_stdout, run_demo
from driftline.orchestration.processes import ProcessStartError


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    day = date.fromisoformat
    parser.add_argument("--start", type=day, required=True, help="First simulated day.")
    parser.add_argument("--serve-from", type=day, required=True, help="First served day.")
    parser.add_argument("--end", type=day, required=True, help="Day after the last one.")
    parser.add_argument("--train-start", type=day, required=True, help="First training day.")
    parser.add_argument("--drift", action="append", default=[], help="NAME[:INTENSITY]@YYYY-MM-DD.")
    parser.add_argument("--rows", type=int, default=4000, help="Transactions per day.")
    parser.add_argument("--fraud-rate", type=float, default=0.02)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--out", type=Path, default=None, help="Timeline JSON.")
    return parser.parse_args()


def main() -> int:
    """Run the loop (it prints the timeline and writes it as JSON)."""
    args = parse_args()
    options = DemoOptions(
        start=args.start,
        serve_from=args.serve_from,
        end=args.end,
        train_start=args.train_start,
        drift=tuple(args.drift),
        rows=args.rows,
        fraud_rate=args.fraud_rate,
        trials=args.trials,
        workers=args.workers,
        port=args.port,
        out=args.out,
    )
    narrate_to_stdout()
    try:
        run_demo(options)
    except (DemoError, DagRunError, ProcessStartError) as error:
        raise SystemExit(f"demo failed: {error}") from error
    return 0


if __name__ == "__main__":
    sys.exit(main())
