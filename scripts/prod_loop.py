"""The closed loop on the production kind of components: ``make demo PROFILE=prod``.

PostgreSQL, Redis, S3 (moto), an MLflow server, the Airflow scheduler (LocalExecutor on
PostgreSQL) and two ``driftline serve`` replicas behind nginx, all on loopback, started
and stopped by :mod:`driftline.orchestration.prod`; this script is its command line.

Usage: python scripts/prod_loop.py --start 2026-01-01 --serve-from 2026-01-18 \\
    --end 2026-01-28 --train-start 2026-01-02 --drift new_fraud_pattern@2026-01-19 \\
    [--rows 3000 ...] [--keep]
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from pathlib import Path

from driftline.orchestration.airflow_rest import AirflowRestError
from driftline.orchestration.postgres import PostgresError
from driftline.orchestration.processes import ProcessStartError
from driftline.orchestration.prod import ProdError, ProdOptions, run_prod

#: The options' defaults (:class:`~driftline.orchestration.demo.LoopOptions`: ``make
#: demo``'s period and scale; ``make demo PROFILE=prod`` passes its own). No ``--drift``
#: means no drift.
DEFAULTS = ProdOptions()


def parse_args() -> argparse.Namespace:
    """Command-line options (defaults: :data:`DEFAULTS`)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    day = date.fromisoformat
    parser.add_argument("--start", type=day, default=DEFAULTS.start, help="First simulated day.")
    parser.add_argument(
        "--serve-from", type=day, default=DEFAULTS.serve_from, help="First served day."
    )
    parser.add_argument("--end", type=day, default=DEFAULTS.end, help="Day after the last one.")
    parser.add_argument(
        "--train-start", type=day, default=DEFAULTS.train_start, help="First training day."
    )
    parser.add_argument(
        "--drift", action="append", default=[], help="NAME[:INTENSITY]@YYYY-MM-DD (none: no drift)."
    )
    parser.add_argument("--rows", type=int, default=DEFAULTS.rows, help="Transactions per day.")
    parser.add_argument("--fraud-rate", type=float, default=DEFAULTS.fraud_rate)
    parser.add_argument(
        "--trials", type=int, default=DEFAULTS.trials, help="Trials of the first training."
    )
    parser.add_argument(
        "--workers", type=int, default=DEFAULTS.workers, help="Workers of the first training."
    )
    parser.add_argument("--out", type=Path, default=DEFAULTS.out, help="Timeline JSON.")
    parser.add_argument("--keep", action="store_true", help="Keep the components up after.")
    return parser.parse_args()


def main() -> int:
    """Run the loop (it prints the timeline and writes it as JSON)."""
    args = parse_args()
    options = ProdOptions(
        start=args.start,
        serve_from=args.serve_from,
        end=args.end,
        train_start=args.train_start,
        drift=tuple(args.drift),
        rows=args.rows,
        fraud_rate=args.fraud_rate,
        trials=args.trials,
        workers=args.workers,
        out=args.out,
    )
    try:
        run_prod(options, keep=args.keep)
    except KeyboardInterrupt:
        return 130
    except (ProdError, AirflowRestError, ProcessStartError, PostgresError) as error:
        raise SystemExit(f"production profile failed: {error}") from error
    return 0


if __name__ == "__main__":
    sys.exit(main())
