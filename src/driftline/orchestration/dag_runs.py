"""Airflow as an adapter: run the real DAGs in this process and read back what they did.

This is how ``make demo``, ``scripts/run_dag.py`` and the tests run DAGs on the embedded
SQLite metadata database without a scheduler: ``dag.test()`` runs, one per data interval.
Two things a scheduler would hand on are read back from the metadata database:

* :func:`task_result` -- a task's return value (its ``return_value`` XCom), which is how
  the demo narrates gates, canaries and decisions;
* :func:`asset_event_extras` -- the extras of the asset events a run emitted, which is
  how the demo sees ``monitor_drift``'s retrain request, as the scheduler would when it
  starts ``retrain_promote`` on that asset.

Airflow is imported only inside these functions (it reads its configuration when first
imported: ``AIRFLOW_HOME`` and ``AIRFLOW__CORE__DAGS_FOLDER`` must be set, and
``airflow db migrate`` + ``airflow dags reserialize`` done, as ``make airflow-init`` does).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any


class DagRunError(RuntimeError):
    """A DAG could not be loaded."""


def load_dag(dag_id: str) -> Any:
    """The DAG ``dag_id`` from the configured dags folder.

    Raises:
        DagRunError: The folder has import errors, or no such DAG.
    """
    from airflow.dag_processing.dagbag import DagBag
    from airflow.settings import DAGS_FOLDER

    bag = DagBag(dag_folder=DAGS_FOLDER)
    if bag.import_errors:
        raise DagRunError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    if dag is None:
        raise DagRunError(f"no DAG {dag_id!r} in {DAGS_FOLDER}")
    return dag


def day_logical_date(day: date) -> datetime:
    """The logical date of the run for the data interval ``[day, day + 1)``.

    For a data-interval timetable a manual run's interval is the one ending at its
    logical date, so the run for ``day`` is dated the next midnight.
    """
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(days=1)


def run_day(dag: Any, day: date, conf: dict[str, Any] | None = None) -> Any:
    """One ``dag.test()`` run of a loaded daily DAG for ``[day, day + 1)``; the DagRun."""
    logical = day_logical_date(day)
    return dag.test(logical_date=logical, run_after=logical, run_conf=conf or None)


def run_daily(
    dag_id: str,
    day: date,
    *,
    say: Callable[[str], None] = print,
    conf: dict[str, Any] | None = None,
) -> Any:
    """One run of the daily DAG ``dag_id`` for ``[day, day + 1)``; the DagRun."""
    dag_run = run_day(load_dag(dag_id), day, conf)
    say(f"{dag_id} {day}: {dag_run.state}")
    return dag_run


def run_days(
    dag_id: str,
    start: date,
    end: date,
    conf: dict[str, Any] | None = None,
    *,
    say: Callable[[str], None] = print,
) -> list[tuple[date, str]]:
    """Run ``dag_id`` once per day in ``[start, end)``, oldest first; (day, state) pairs."""
    dag = load_dag(dag_id)
    states = []
    day = start
    while day < end:
        dag_run = run_day(dag, day, conf)
        states.append((day, str(dag_run.state)))
        say(f"{dag_id} {day.isoformat()}: {dag_run.state}")
        day += timedelta(days=1)
    return states


def run_manual(
    dag_id: str, conf: dict[str, Any] | None, *, say: Callable[[str], None] = print
) -> Any:
    """One manual run of ``dag_id`` with ``conf``; the DagRun."""
    dag_run = load_dag(dag_id).test(run_conf=conf or None)
    say(f"{dag_id} manual run: {dag_run.state}")
    return dag_run


def task_result(dag_run: Any, task_id: str) -> Any:
    """The return value of ``task_id`` in ``dag_run`` (None if it did not run)."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(XComModel.value).where(
            XComModel.dag_id == dag_run.dag_id,
            XComModel.run_id == dag_run.run_id,
            XComModel.task_id == task_id,
            XComModel.key == "return_value",
        )
        value = session.scalars(query).first()
    return json.loads(value) if isinstance(value, str) else value


def asset_event_extras(uri: str, run_id: str) -> list[dict[str, Any]]:
    """Extras of the events on the asset ``uri`` that the DAG run ``run_id`` emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = (
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.uri == uri, AssetEvent.source_run_id == run_id)
        )
        return [dict(event.extra or {}) for event in session.scalars(query)]
