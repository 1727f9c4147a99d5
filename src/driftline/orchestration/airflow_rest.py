"""A small client of Airflow's REST API (``/api/v2``), standard library only.

The production profile (:mod:`driftline.orchestration.prod`) and the scheduler tests
drive the real scheduler the way a user does: unpause a DAG, trigger a run, post a
backfill, read runs, task instances, return values and the asset events that started a
run. Both run the API server all-admins on loopback (``simple_auth_manager_all_admins``,
:mod:`driftline.orchestration.airflow_stack`), so no call logs in.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from datetime import date
from typing import Any

#: How much of an error answer's body the exception message keeps.
ERROR_BODY_CHARS = 2000


class AirflowRestError(RuntimeError):
    """The API server answered an HTTP error.

    Attributes:
        status: The HTTP status code.
        body: The start of the answer's body (Airflow's JSON ``detail``).
    """

    def __init__(self, method: str, path: str, status: int, body: bytes) -> None:
        self.status = status
        self.body = body[:ERROR_BODY_CHARS]
        super().__init__(f"{method} {path}: {status} {self.body!r}")


def midnight(day: date) -> str:
    """``day`` at 00:00 UTC, as Airflow's API writes dates (``YYYY-MM-DDT00:00:00Z``)."""
    return f"{day.isoformat()}T00:00:00Z"


@dataclass(frozen=True)
class AirflowRest:
    """The REST calls driftline makes, on one API server.

    Attributes:
        base_url: The API server, e.g. ``http://127.0.0.1:8080``.
        timeout_s: Socket timeout of one call.
    """

    base_url: str
    timeout_s: float = 60.0

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """One REST call with a JSON body (if any); the decoded JSON answer.

        Raises:
            AirflowRestError: An HTTP error (status and body in the message).
        """
        request = urllib.request.Request(
            f"{self.base_url}{path}",
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as reply:
                return json.loads(reply.read() or b"null")
        except urllib.error.HTTPError as error:
            raise AirflowRestError(method, path, error.code, error.read()) from None

    def unpause(self, dag_id: str) -> None:
        """Unpause ``dag_id`` (its schedule and asset events start runs)."""
        self.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """A manual run of ``dag_id`` with ``conf`` (no logical date); its run id."""
        body = {"logical_date": None, "conf": conf}
        run: dict[str, Any] = self.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        return str(run["dag_run_id"])

    def backfill(self, dag_id: str, first: date, last: date, **options: Any) -> dict[str, Any]:
        """A backfill of the daily ``dag_id`` from day ``first`` to day ``last`` (both run).

        One run at a time, and ``reprocess_behavior`` ``failed`` (which also creates the
        missing runs; Airflow requires a behaviour for a DAG with ``depends_on_past``),
        unless ``options`` say otherwise.

        Returns:
            The backfill as the API describes it (``id``, ``max_active_runs``, ...).
        """
        body = {
            "dag_id": dag_id,
            "from_date": midnight(first),
            "to_date": midnight(last),
            "max_active_runs": 1,
            "reprocess_behavior": "failed",
            **options,
        }
        backfill: dict[str, Any] = self.call("POST", "/api/v2/backfills", body)
        return backfill

    def runs(
        self, dag_id: str, order_by: str = "run_after", limit: int = 200
    ) -> list[dict[str, Any]]:
        """The runs of ``dag_id`` (the first ``limit``), ordered by ``order_by``."""
        path = f"/api/v2/dags/{dag_id}/dagRuns?limit={limit}&order_by={order_by}"
        return list(self.call("GET", path)["dag_runs"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        """One run."""
        return dict(self.call("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """The task instances of a run."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return list(self.call("GET", path)["task_instances"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """The state of each task of a run."""
        return {ti["task_id"]: str(ti["state"]) for ti in self.task_instances(dag_id, run_id)}

    def result(self, dag_id: str, run_id: str, task_id: str) -> Any:
        """The return value (XCom ``return_value``) of a task; None when there is none.

        Any HTTP error reads as "none": Airflow answers 404 for a task that did not run
        (skipped, upstream failed) or returned nothing.
        """
        path = (
            f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/"
            "return_value?deserialize=true&stringify=false"
        )
        try:
            return self.call("GET", path).get("value")
        except AirflowRestError:
            return None

    def set_state(self, dag_id: str, run_id: str, state: str) -> None:
        """Mark a run ``success`` or ``failed`` (its unfinished tasks stop)."""
        self.call("PATCH", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}", {"state": state})

    def consumed_days(self, dag_id: str, run_id: str) -> list[str]:
        """``extra.day`` of each asset event that started an asset-triggered run, sorted."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents"
        events = self.call("GET", path)["asset_events"]
        return sorted(str((event.get("extra") or {}).get("day")) for event in events)
