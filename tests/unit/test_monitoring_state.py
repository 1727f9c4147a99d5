"""Monitoring state in the lake: the drift log's entries, reports and references.

Two monitoring runs that load the drift log at the same time and each record their own
day must both be kept (no read-modify-write of one shared file); a drift reference
cached in the lake is read from there.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pandas as pd

from driftline.core.lake import write_json
from driftline.core.settings import Settings
from driftline.monitoring import DriftLog, DriftResult, TriggerDecision
from driftline.monitoring.drift_report import report_folder
from driftline.monitoring.files import list_files, read_json
from driftline.monitoring.reference import load_reference, reference_path

DAY = date(2026, 3, 2)


def result(day: date, *, drifted: bool = True) -> DriftResult:
    """A stored drift result of ``day``."""
    return DriftResult.from_dict(
        {
            "interval": f"[{day}, {day + timedelta(days=1)})",
            "day": day.isoformat(),
            "status": "ok",
            "rows": 900,
            "reference_rows": 3000,
            "drifted_columns": ["amount"] if drifted else [],
            "drift_share": 0.6 if drifted else 0.1,
            "dataset_drift": drifted,
            "prediction_drift_score": 0.01,
            "prediction_drift": False,
            "drifted": drifted,
        }
    )


def test_two_runs_saving_at_once_keep_each_others_entries(settings: Settings) -> None:
    first, second = DriftLog.load(settings), DriftLog.load(settings)  # loaded together
    first.record(result(DAY))
    second.record(result(DAY + timedelta(days=1), drifted=False))
    second.record_trigger(DAY, TriggerDecision(True, "drift", DAY, DAY + timedelta(days=1)))
    first.save()
    second.save()

    merged = DriftLog.load(settings)
    assert [r.day for r in merged.history()] == [DAY.isoformat(), "2026-03-03"]
    assert merged.last_trigger_day == DAY
    root = DriftLog.path_for(settings)
    assert root == f"{settings.lake_uri}/monitoring/drift_log"
    assert [Path(uri).name for uri in list_files(f"{root}/results", ".json")] == [
        "dt=2026-03-02.json",
        "dt=2026-03-03.json",
    ]
    # A rerun of a day replaces only that day's object; nothing else is rewritten.
    other = Path(f"{root}/results/dt=2026-03-03.json")
    before = other.stat().st_mtime_ns
    rerun = DriftLog.load(settings)
    rerun.record(result(DAY, drifted=False))
    rerun.save()
    assert other.stat().st_mtime_ns == before
    assert not DriftLog.load(settings).history()[0].drifted


def test_files_are_whole_and_listings_skip_hidden_names(settings: Settings) -> None:
    folder = f"{settings.lake_uri}/monitoring/x"
    write_json(f"{folder}/a.json", {"b": 1, "a": [2]})
    Path(folder, ".a.json.tmp-0123").write_text("{")  # a write in progress

    assert read_json(f"{folder}/a.json") == {"a": [2], "b": 1}
    assert list_files(folder, ".json") == [f"{folder}/a.json"]
    assert list_files(f"{folder}/missing", ".json") == []
    assert report_folder(settings, DAY) == f"{settings.lake_uri}/monitoring/reports/dt=2026-03-02"


def test_a_reference_cached_in_the_lake_is_read_from_there(settings: Settings) -> None:
    frame = pd.DataFrame({"amount": [1.0, 2.0], "score": [0.1, 0.9], "label": [0, 1]})
    uri = reference_path(settings, "7")
    assert uri == f"{settings.lake_uri}/monitoring/reference/v7.parquet"
    Path(uri).parent.mkdir(parents=True)
    frame.to_parquet(uri)

    # No registry is reachable in this test: the lake's copy is all there is to read.
    pd.testing.assert_frame_equal(load_reference(settings, "7"), frame)
