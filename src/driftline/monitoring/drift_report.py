"""The files of one interval's drift check: Evidently's HTML report and ``drift.json``.

:func:`write_drift_report` is the step after
:func:`~driftline.monitoring.drift.measure_drift`: it writes what the measurement holds
into the interval's ``dt=YYYY-MM-DD`` folder, in the lake by default
(``{lake}/monitoring/reports/``), and returns the result naming those files.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

from driftline.core.atomic import put_atomic
from driftline.core.lake import write_json
from driftline.core.settings import Settings
from driftline.monitoring.files import monitoring_uri, remove
from driftline.monitoring.result import DriftMeasurement, DriftResult

REPORT_HTML = "drift_report.html"
REPORT_JSON = "drift.json"


def report_folder(settings: Settings, day: date, report_dir: str | Path | None = None) -> str:
    """The folder (URI) of ``day``'s drift report: ``{report_dir}/dt=YYYY-MM-DD``.

    ``report_dir`` defaults to ``{lake}/monitoring/reports``.
    """
    root = str(report_dir) if report_dir is not None else monitoring_uri(settings, "reports")
    return f"{root.rstrip('/')}/dt={day.isoformat()}"


def write_drift_report(measurement: DriftMeasurement, folder: str | Path) -> DriftResult:
    """Write ``measurement`` into ``folder``; return its result with the files' URIs.

    Writes ``drift_report.html`` (Evidently's report) and ``drift.json`` (the result as
    a dict), each atomically, overwriting an earlier run's. For an interval with
    insufficient data there is no HTML report: only ``drift.json`` is written, and a
    stale HTML report of an earlier run is removed.
    """
    root = str(folder).rstrip("/")
    html_path, json_path = f"{root}/{REPORT_HTML}", f"{root}/{REPORT_JSON}"
    snapshot = measurement.snapshot
    if snapshot is None:
        result = dataclasses.replace(measurement.result, report_json=json_path)
        remove(html_path)  # a rerun must not leave a stale report behind
    else:
        result = dataclasses.replace(
            measurement.result, report_html=html_path, report_json=json_path
        )
        # Snapshot.save_html ignores a file object: take the HTML it would write.
        put_atomic(html_path, snapshot.get_html_str(as_iframe=False).encode())
    write_json(json_path, result.to_dict())
    return result
