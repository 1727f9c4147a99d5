"""The prediction log and the monitoring state on an S3 lake (a moto server).

``lake_uri`` is ``s3://<bucket>/lake``; s3fs finds the emulator through the standard
``AWS_ENDPOINT_URL`` variable, as a deployment would point it at any S3-compatible
store. Two writers flush concurrently; every row comes back exactly once, no temporary
object is ever left in the bucket, and the drift log, a report and a reference
round-trip through the bucket.
"""

from __future__ import annotations

import io
import threading
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd

from driftline.core.atomic import put_atomic
from driftline.core.settings import Settings
from driftline.data.predictions import PredictionLog, logged_days, read_predictions
from driftline.monitoring import DriftLog, DriftResult, TriggerDecision
from driftline.monitoring.drift_report import report_folder, write_drift_report
from driftline.monitoring.files import read_json
from driftline.monitoring.reference import load_reference, reference_path
from driftline.monitoring.result import DriftMeasurement
from tests.infra.conftest import keys

DAY = date(2026, 1, 10)


def records(writer: int, n: int) -> list[dict[str, Any]]:
    """``n`` records of writer ``writer``, over two days."""
    start = datetime(DAY.year, DAY.month, DAY.day, 20, tzinfo=UTC)
    return [
        {
            "transaction_id": f"w{writer}-{i}",
            "ts": start + timedelta(minutes=3 * i),
            "score": 0.5,
            "features_fallback": False,
        }
        for i in range(n)
    ]


def test_prediction_log_on_s3_every_row_once_no_temporary_objects(
    s3_lake: tuple[Settings, Any, str],
) -> None:
    settings, client, bucket = s3_lake
    logs = [PredictionLog(settings, flush_rows=25, flush_seconds=0.2) for _ in range(2)]

    def write(k: int) -> None:
        for chunk in range(10):  # 10 requests of 12 rows each
            logs[k].append(records(k, 120)[chunk * 12 : (chunk + 1) * 12])

    threads = [threading.Thread(target=write, args=(k,)) for k in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    logs[0].shadow_log().append([{**row, "shadow_score": 0.4} for row in records(0, 3)])
    for log in logs:
        log.close()

    days = [DAY, DAY + timedelta(days=1)]
    ids = [tid for day in days for tid in read_predictions(settings, day)["transaction_id"]]
    assert sorted(ids) == sorted(f"w{k}-{i}" for k in range(2) for i in range(120))
    assert logged_days(settings) == days
    assert len(read_predictions(settings, DAY, shadow=True)) == 3
    stored = keys(client, bucket)
    assert all(key.endswith(".parquet") and "/." not in key for key in stored), stored
    served = [key for key in stored if "/shadow/" not in key]
    assert {key.split("/")[-1].rsplit("-", 1)[0] for key in served} == {log.writer for log in logs}
    assert sum(log.rows_written for log in logs) == 240  # the shadow log counts its own
    assert read_predictions(settings, DAY)["ts"].dt.tz is not None


def test_drift_log_report_and_reference_on_s3(s3_lake: tuple[Settings, Any, str]) -> None:
    settings, client, bucket = s3_lake
    stored = {
        "interval": f"[{DAY}, {DAY + timedelta(days=1)})", "day": DAY.isoformat(),
        "status": "insufficient_data", "rows": 3, "reference_rows": 3000,
        "drifted_columns": [], "drift_share": 0.0, "dataset_drift": False,
        "prediction_drift_score": None, "prediction_drift": False, "drifted": False,
    }  # fmt: skip
    result = write_drift_report(
        DriftMeasurement(DriftResult.from_dict(stored)), report_folder(settings, DAY)
    )
    assert result.report_json == f"{settings.lake_uri}/monitoring/reports/dt={DAY}/drift.json"
    assert read_json(result.report_json)["status"] == "insufficient_data"
    first, second = DriftLog.load(settings), DriftLog.load(settings)
    first.record(result)
    second.record_trigger(DAY, TriggerDecision(True, "drift", DAY, DAY + timedelta(days=1)))
    first.save()
    second.save()
    loaded = DriftLog.load(settings)
    assert [r.day for r in loaded.history()] == [DAY.isoformat()]
    assert loaded.last_trigger_day == DAY

    frame = pd.DataFrame({"amount": [1.0, 2.0], "score": [0.2, 0.8]})
    sink = io.BytesIO()
    frame.to_parquet(sink)
    put_atomic(reference_path(settings, "3"), sink.getvalue())
    pd.testing.assert_frame_equal(load_reference(settings, "3"), frame)
    assert keys(client, bucket) == [
        "lake/monitoring/drift_log/results/dt=2026-01-10.json",
        "lake/monitoring/drift_log/triggers/dt=2026-01-10.json",
        "lake/monitoring/reference/v3.parquet",
        "lake/monitoring/reports/dt=2026-01-10/drift.json",
    ]
