"""Every DAG file imports cleanly, fast, and touches no database or connection."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from driftline.orchestration import assets
from tests.dags.conftest import REPO, airflow_env

PROBE = r"""
import json, sys, time
import sqlalchemy.engine.base as base
from airflow.sdk import BaseHook

def forbidden(*args, **kwargs):
    raise RuntimeError("metadata DB or connection touched at parse time")

import airflow.dag_processing.dagbag as dagbag_module
base.Engine.connect = forbidden
BaseHook.get_connection = classmethod(forbidden)
from airflow.dag_processing.dagbag import DagBag
def seconds(duration):
    return duration.total_seconds() if hasattr(duration, "total_seconds") else float(duration)

started = time.perf_counter()
bag = DagBag(dag_folder=sys.argv[1])
elapsed = time.perf_counter() - started
print(json.dumps({"errors": {k: str(v) for k, v in bag.import_errors.items()},
                  "dags": sorted(bag.dag_ids), "seconds": elapsed,
                  "stats": [[str(s.file), seconds(s.duration)] for s in bag.dagbag_stats]}))
"""


def _probe(code: str, argument: str, tmp_path: Path) -> dict[str, Any]:
    """Run ``code`` in a fresh interpreter with the Airflow test env; its last JSON line."""
    done = subprocess.run(
        [sys.executable, "-c", code, argument],
        env=airflow_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def test_dags_import_without_errors_db_or_slowness(tmp_path: Path) -> None:
    report = _probe(PROBE, str(REPO / "dags"), tmp_path)
    assert report["errors"] == {}
    assert set(report["dags"]) == {
        "ingest_validate_materialize",
        "train_register",
        "monitor_drift",
        "retrain_promote",
    }
    for file_name, seconds in report["stats"]:
        assert seconds < 1.0, f"{file_name} took {seconds:.2f}s to parse"


HEAVY = (
    "pyspark",
    "feast",
    "great_expectations",
    "pandas",
    "torch",
    "mlflow",
    "optuna",
    "kfp",
    "driftline",
    "pipelines",
    "components",
)
# The asset URIs and the request parsing: what a DAG declares at parse time.
PARSE_TIME_MODULES = ("driftline.orchestration.assets", "driftline.orchestration.requests")


def test_dag_files_have_no_heavy_top_level_imports() -> None:
    for path in (REPO / "dags").glob("*.py"):
        for line in path.read_text().splitlines():
            if line.startswith("from driftline.orchestration import "):
                names = line.removeprefix("from driftline.orchestration import ").split(", ")
                modules = {f"driftline.orchestration.{name}" for name in names}
                assert modules <= set(PARSE_TIME_MODULES), f"{path}: {line}"
            elif line.startswith(("import ", "from ")):
                assert not any(line.split()[1].startswith(h) for h in HEAVY), f"{path}: {line}"


def test_parse_time_driftline_modules_import_nothing_heavy(tmp_path: Path) -> None:
    """What the DAG files import from driftline at parse time pulls in no heavy package."""
    probe = (
        "import json, sys\n"
        + "".join(f"import {module}\n" for module in PARSE_TIME_MODULES)
        + "print(json.dumps(sorted(sys.modules)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    light = {"driftline", "driftline.core", "driftline.core.interval", "driftline.orchestration"}
    heavy = {*HEAVY, "airflow"} - {"driftline"}
    pulled = [
        name
        for name in loaded
        if name.split(".")[0] in heavy
        or (name.startswith("driftline") and name not in light | set(PARSE_TIME_MODULES))
    ]
    assert pulled == []


ASSET_PROBE = r"""
import json, runpy, sys
from types import SimpleNamespace

from driftline.orchestration import assets
from driftline.orchestration.requests import newest_event_extra as window

module = runpy.run_path(sys.argv[1])
event = SimpleNamespace(extra={"window_start": "2026-02-01", "window_end": "2026-02-20"})
older = SimpleNamespace(extra={"window_start": "2026-01-01", "window_end": "2026-01-20"})
print(json.dumps({
    "from_event": window({assets.TRAINING_REQUESTS: [older, event]}),
    "no_event": window({}),
    "schedule": str(module["TRAINING_REQUESTS"].uri),
}))
"""


def test_train_register_takes_its_window_from_the_newest_request_event(tmp_path: Path) -> None:
    report = _probe(ASSET_PROBE, str(REPO / "dags" / "train_register.py"), tmp_path)
    assert report["from_event"] == {"window_start": "2026-02-01", "window_end": "2026-02-20"}
    assert report["no_event"] == {}
    assert report["schedule"] == assets.TRAINING_REQUESTS


RETRAIN_PROBE = r"""
import json, runpy, sys
from types import SimpleNamespace

from driftline.orchestration import assets
from driftline.orchestration.requests import newest_event_extra as request

retrain = runpy.run_path(sys.argv[1] + "/retrain_promote.py")
monitor = runpy.run_path(sys.argv[1] + "/monitor_drift.py")
event = SimpleNamespace(extra={
    "window_start": "2026-01-07", "window_end": "2026-01-28", "drift_start": "2026-01-20",
    "drift_day": "2026-01-27", "reason": "drift", "drift_report": "/r.html",
})
print(json.dumps({
    "from_event": request({assets.RETRAIN_REQUESTS: [event]}),
    "no_event": request({}),
    "emitted": str(monitor["RETRAIN_REQUESTS"].uri),
    "consumed": str(retrain["RETRAIN_REQUESTS"].uri),
}))
"""


def test_monitor_drift_requests_are_what_retrain_promote_is_scheduled_on(tmp_path: Path) -> None:
    report = _probe(RETRAIN_PROBE, str(REPO / "dags"), tmp_path)
    assert report["emitted"] == report["consumed"] == assets.RETRAIN_REQUESTS
    assert report["from_event"]["window_start"] == "2026-01-07"
    assert report["from_event"]["drift_report"] == "/r.html"
    assert report["no_event"] == {}
