"""The files of one interval's drift check: Evidently's HTML report and ``drift.json``.

:func:`write_drift_report` is the step after
:func:`~driftline.monitoring.drift.measure_drift`: it writes what the measurement holds
into the interval's ``dt=YYYY-MM-DD`` folder and returns the result naming those files.
"""

from __future__ import annotations

import dataclasses
from datetime import date
from pathlib import Path

from driftline.core.atomic import write_atomic
from driftline.core.settings import Settings
from driftline.monitoring.files import write_json
from driftline.monitoring.result import DriftMeasurement, DriftResult

REPORT_HTML = "drift_report.html"
REPORT_JSON = "drift.json"


def report_folder(settings: Settings, day: date, report_dir: Path | None = None) -> Path:
    """The folder of ``day``'s drift report: ``{report_dir}/dt=YYYY-MM-DD``.

    ``report_dir`` defaults to ``{home}/monitoring/reports``.
    """
    return (report_dir or settings.home / "monitoring" / "reports") / f"dt={day.isoformat()}"


def write_drift_report(measurement: DriftMeasurement, folder: Path) -> DriftResult:
    """Write ``measurement`` into ``folder``; return its result with the files' paths.

    Writes ``drift_report.html`` (Evidently's report) and ``drift.json`` (the result as
    a dict), each atomically, overwriting an earlier run's. For an interval with
    insufficient data there is no HTML report: only ``drift.json`` is written, and a
    stale HTML report of an earlier run is removed.
    """
    html_path, json_path = folder / REPORT_HTML, folder / REPORT_JSON
    snapshot = measurement.snapshot
    if snapshot is None:
        result = dataclasses.replace(measurement.result, report_json=str(json_path))
        html_path.unlink(missing_ok=True)  # a rerun must not leave a stale report behind
    else:
        result = dataclasses.replace(
            measurement.result, report_html=str(html_path), report_json=str(json_path)
        )
        # Snapshot.save_html ignores a file object: write the HTML it writes to a file name.
        html = snapshot.get_html_str(as_iframe=False).encode()
        write_atomic(html_path, lambda out: out.write(html))
    write_json(json_path, result.to_dict())
    return result
