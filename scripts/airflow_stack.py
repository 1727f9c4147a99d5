"""Run the real Airflow scheduler profile until Ctrl-C: ``make airflow-ui``.

Starts (or reuses) the PostgreSQL metadata DB under ``$DRIFTLINE_HOME/postgres``, then
the scheduler, DAG processor, triggerer and API server with the LocalExecutor, all on
loopback (:mod:`driftline.orchestration.airflow_stack`), prints where the UI is and how
to log in, and waits. Ctrl-C (or any of the processes exiting) stops them all, then the
PostgreSQL server if this command started it.

Usage: python scripts/airflow_stack.py [--port 8080] [--pg-port 5433]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from driftline.orchestration.airflow_stack import StackConfig, airflow_stack
from driftline.orchestration.postgres import ensure_postgres, stop_postgres
from driftline.orchestration.processes import ProcessStartError

REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    """Start the profile, wait, stop it; the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080, help="API server (UI) port")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL port")
    args = parser.parse_args()
    home = Path(os.environ.get("DRIFTLINE_HOME", REPO / ".driftline")).resolve()
    airflow_home = Path(os.environ.get("AIRFLOW_HOME", home / "airflow")).resolve()
    pg_root = home / "postgres"
    was_running = (pg_root / "data" / "postmaster.pid").exists()
    server = ensure_postgres(pg_root, args.pg_port)
    config = StackConfig(
        airflow_home=airflow_home,
        dags_folder=Path(os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", REPO / "dags")),
        db_url=server.url(),
        api_port=args.port,
        env={"DRIFTLINE_HOME": str(home)},
    )
    try:
        with airflow_stack(config, log_dir=airflow_home / "stack") as stack:
            passwords = airflow_home / "simple_auth_manager_passwords.json.generated"
            print(
                f"Airflow UI and REST API: {stack.api_url} (user admin, password in "
                f"{passwords}); metadata DB {server.url()}; logs {airflow_home / 'stack'}"
            )
            print("Ctrl-C stops the scheduler, DAG processor, triggerer and API server.")
            while True:
                stack.check_alive()
                time.sleep(2)
    except KeyboardInterrupt:
        return 0
    except ProcessStartError as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        if not was_running:
            stop_postgres(pg_root)


if __name__ == "__main__":
    sys.exit(main())
