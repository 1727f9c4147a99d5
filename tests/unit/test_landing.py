"""The landing sensor's check: are the day's landing files there?"""

from __future__ import annotations

from datetime import date

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.orchestration.landing import landing_ready, landing_status
from driftline.simulator import SimulatorConfig, write_landing


def test_a_day_is_ready_once_both_landing_files_are_there(settings: Settings) -> None:
    day = Interval.for_day("2026-01-02")
    before = landing_status(day, settings)
    assert not before.ready
    assert before.missing == (("transactions", date(2026, 1, 2)), ("labels", date(2026, 1, 2)))
    assert "missing transactions 2026-01-02, labels 2026-01-02" in before.describe()

    write_landing(SimulatorConfig(rows_per_day=50), day, settings.lake_uri)
    assert landing_ready(day, settings)
    assert "all there" in landing_status(day, settings).describe()


def test_a_late_dataset_keeps_the_day_waiting(settings: Settings) -> None:
    days = Interval.parse("2026-01-02", "2026-01-04")
    write_landing(SimulatorConfig(rows_per_day=50), days, settings.lake_uri)
    late = lake.landing_file(settings.lake_uri, "labels", date(2026, 1, 3))
    fs, path = lake.filesystem(late)
    fs.rm(path)

    status = landing_status(days, settings)
    assert status.missing == (("labels", date(2026, 1, 3)),)
    assert landing_ready(Interval.for_day("2026-01-02"), settings)
