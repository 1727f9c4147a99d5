"""Has the day's landing data arrived? What the ingest DAG's landing sensor asks.

The upstream systems drop one file per dataset and day into the landing zone
(``{lake}/landing/{dataset}/dt=YYYY-MM-DD/{dataset}.parquet``). A daily run that starts
before its files are there waits for them (a sensor in reschedule mode, which frees its
worker slot between checks) instead of failing its ingest task and retrying: the data
is late, not wrong. Once the sensor's timeout passes the run fails once, naming what is
still missing.

Nothing here imports Airflow; the check reads only the lake (any fsspec URI). The lake
and settings modules are imported when the check runs, so that the DAG file can read
the sensor's timing at parse time without loading them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from typing import TYPE_CHECKING

from driftline.core.interval import Interval

if TYPE_CHECKING:
    from driftline.core.settings import Settings

#: The datasets a daily ingest run needs, each one landing file per day.
LANDING_DATASETS = ("transactions", "labels")
#: Environment variable overriding :data:`POKE_SECONDS` (the production profile on one
#: machine, ``make demo PROFILE=prod``, lands a simulated day every minute or two).
POKE_ENV = "DRIFTLINE_LANDING_POKE_SECONDS"
#: Seconds between two checks of the landing zone (read when the DAG file is parsed).
POKE_SECONDS = float(os.environ.get(POKE_ENV) or 300.0)
#: Longest wait for a day's landing files before the run fails (a day late is an incident).
WAIT_SECONDS = 24 * 3600.0


@dataclass(frozen=True)
class LandingStatus:
    """Which landing files of an interval exist."""

    interval: Interval
    missing: tuple[tuple[str, date], ...]

    @property
    def ready(self) -> bool:
        """Every landing file of every day of the interval is there."""
        return not self.missing

    def describe(self) -> str:
        """One line for the task log."""
        if self.ready:
            return f"landing files of {self.interval} are all there"
        listed = ", ".join(f"{dataset} {day}" for dataset, day in self.missing)
        return f"waiting for landing files of {self.interval}: missing {listed}"


def landing_status(
    interval: Interval,
    settings: Settings | None = None,
    datasets: tuple[str, ...] = LANDING_DATASETS,
) -> LandingStatus:
    """The landing files of ``datasets`` for each day of ``interval``, present or missing."""
    from driftline.core import lake
    from driftline.core.settings import get_settings

    cfg = settings or get_settings()
    missing = tuple(
        (dataset, day)
        for day in interval.days()
        for dataset in datasets
        if not lake.exists(lake.landing_file(cfg.lake_uri, dataset, day))
    )
    return LandingStatus(interval, missing)


def landing_ready(interval: Interval, settings: Settings | None = None) -> bool:
    """Whether the day's (the interval's) landing files all exist."""
    return landing_status(interval, settings).ready
