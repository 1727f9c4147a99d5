"""The closed loop of ``make demo``: backfill, first champion, serving, drift, retrain, canary.

The loop itself is :mod:`driftline.orchestration.demo` (DAG runs with ``dag.test()`` on
the embedded SQLite metadata DB, in this process; the scoring service a child process it
owns, checked and always stopped); this script is its command line.

Usage: python scripts/demo_loop.py [--start 2025-12-18 --train-start 2026-01-01 \\
    --serve-from 2026-01-17 --end 2026-01-31 --drift new_fraud_pattern@2026-01-20 \\
    --rows 4000 ...]  (the defaults are ``make demo``'s; ``--no-drift`` for none)
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from driftline.orchestration import demo
from driftline.orchestration.dag_runs import DagRunError
from driftline.orchestration.demo import DemoError, DemoOptions, narrate_to_stdout, run_demo
from driftline.orchestration.processes import ProcessStartError


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    day = date.fromisoformat
    parser.add_argument("--start", type=day, default=demo.START, help="First simulated day.")
    parser.add_argument("--serve-from", type=day, default=demo.SERVE_FROM, help="First served day.")
    parser.add_argument("--end", type=day, default=demo.END, help="Day after the last one.")
    parser.add_argument(
        "--train-start", type=day, default=demo.TRAIN_START, help="First training day."
    )
    drift = parser.add_mutually_exclusive_group()
    drift.add_argument(
        "--drift", action="append", help="NAME[:INTENSITY]@YYYY-MM-DD (default: the demo's)."
    )
    drift.add_argument("--no-drift", action="store_true", help="Simulate no drift at all.")
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
        drift=() if args.no_drift else tuple(args.drift or demo.DRIFT),
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
