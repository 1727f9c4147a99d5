"""Ingest: landing files -> staged batches -> (validation gate) -> raw day partitions.

``ingest`` copies each day's landing file of the interval into the staging zone,
unchanged, so validation judges exactly what arrived. ``publish_validated`` runs
the dataset's Great Expectations suite on each staged batch and then either
publishes it as the raw partition (cast to the canonical schema, sorted, replaced
atomically) or moves it to quarantine with the validation result and raises.
A failing day never touches earlier raw partitions, nor its own previous one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.schemas import EVENT_TIME_COLUMN, SCHEMAS
from driftline.core.settings import Settings, get_settings

log = logging.getLogger(__name__)

DayCallback = Callable[[date], None]


class LandingFileError(Exception):
    """A landing file is missing, empty or unreadable."""


class BatchQuarantined(Exception):  # noqa: N818 (reads as an event: "batch quarantined")
    """A batch failed its gate and was moved to quarantine (the message says why)."""

    def __init__(self, message: str, quarantine_uri: str) -> None:
        super().__init__(message)
        self.quarantine_uri = quarantine_uri


@dataclass(frozen=True)
class DayCounts:
    """Rows handled per day by a stage."""

    dataset: str
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Rows over all days."""
        return sum(self.rows.values())


def _check_dataset(dataset: str) -> None:
    if dataset not in SCHEMAS:
        raise ValueError(f"unknown dataset {dataset!r}; expected one of {sorted(SCHEMAS)}")


def quarantine(
    lake_uri: str, dataset: str, day: date, reason: str, payload: bytes, result: dict[str, object]
) -> str:
    """Put a rejected batch and the reason it was rejected into the quarantine zone.

    Returns:
        The URI of the quarantine partition.
    """
    target = lake.partition_uri(lake_uri, "quarantine", dataset, day)
    fs, path = lake.filesystem(target)
    if fs.exists(path):
        fs.rm(path, recursive=True)
    fs.makedirs(path, exist_ok=True)
    fs.pipe_file(f"{path}/{dataset}.parquet", payload)
    fs.pipe_file(f"{path}/reason.txt", reason.encode() + b"\n")
    lake.write_json(f"{target}/validation_result.json", {"reason": reason, "result": result})
    log.error("quarantined %s %s: %s", dataset, day, reason)
    return target


def _each_day(
    dataset: str,
    interval: Interval,
    settings: Settings | None,
    on_day: DayCallback | None,
    handle_day: Callable[[Settings, str, date], int],
) -> DayCounts:
    """Run ``handle_day`` for every day of ``interval``, oldest first, counting rows."""
    _check_dataset(dataset)
    cfg = settings or get_settings()
    rows: dict[str, int] = {}
    for day in interval.days():
        rows[day.isoformat()] = handle_day(cfg, dataset, day)
        if on_day:
            on_day(day)
    return DayCounts(dataset, rows)


def _stage_day(cfg: Settings, dataset: str, day: date) -> int:
    """Copy one landing file into staging unchanged; returns its row count."""
    lake_uri = cfg.lake_uri
    source = lake.landing_file(lake_uri, dataset, day)
    if not lake.exists(source):
        raise LandingFileError(f"no landing file for {dataset} on {day}: {source}")
    fs, path = lake.filesystem(source)
    payload = fs.cat_file(path)
    try:
        table = pq.read_table(pa.BufferReader(payload))  # parse the bytes already read
    except (pa.ArrowInvalid, OSError) as error:
        reason = f"landing file for {dataset} on {day} is empty or unreadable: {error}"
        where = quarantine(lake_uri, dataset, day, reason, payload, {"error": str(error)})
        raise BatchQuarantined(f"{reason} (quarantined at {where})", where) from error
    lake.replace_partition(lake_uri, "staging", dataset, day, table)
    return int(table.num_rows)


def ingest(
    dataset: str,
    interval: Interval,
    settings: Settings | None = None,
    on_day: DayCallback | None = None,
) -> DayCounts:
    """Stage the landing files of ``dataset`` for every day of ``interval``.

    Args:
        dataset: ``transactions`` or ``labels``.
        interval: The data interval to process.
        settings: Settings; defaults to :func:`get_settings`.
        on_day: Called after each day (progress reporting).

    Returns:
        Rows staged per day.

    Raises:
        LandingFileError: A landing file is missing.
        BatchQuarantined: A landing file is empty or unreadable (it is quarantined).
    """
    return _each_day(dataset, interval, settings, on_day, _stage_day)


def canonicalize(table: pa.Table, dataset: str) -> pa.Table:
    """Cast a validated batch to the canonical schema, sorted deterministically."""
    schema = SCHEMAS[dataset]
    typed = table.select(schema.names).cast(schema)
    order = [(EVENT_TIME_COLUMN[dataset], "ascending"), ("transaction_id", "ascending")]
    return typed.take(pc.sort_indices(typed, sort_keys=order))


def _publish_day(cfg: Settings, dataset: str, day: date) -> int:
    """Validate one staged batch, then publish it or quarantine it."""
    from driftline.data.validate import describe_failures, validate_frame

    staged_uri = lake.partition_file(cfg.lake_uri, "staging", dataset, day)
    if not lake.exists(staged_uri):
        raise LandingFileError(f"nothing staged for {dataset} on {day}; run ingest first")
    table = lake.read_file(staged_uri)
    outcome = validate_frame(table.to_pandas(), f"raw_{dataset}", Interval.for_day(day), cfg)
    if not outcome.success:
        fs, path = lake.filesystem(staged_uri)
        reason = describe_failures(outcome)
        where = quarantine(cfg.lake_uri, dataset, day, reason, fs.cat_file(path), outcome.result)
        lake.remove_partition(cfg.lake_uri, "staging", dataset, day)
        raise BatchQuarantined(
            f"{dataset} batch for {day} failed validation and was quarantined at {where}: {reason}",
            where,
        )
    # The staged batch stays as the record of what was last received (DVC tracks it);
    # the next ingest of the day replaces it.
    lake.replace_partition(cfg.lake_uri, "raw", dataset, day, canonicalize(table, dataset))
    return int(table.num_rows)


def publish_validated(
    dataset: str,
    interval: Interval,
    settings: Settings | None = None,
    on_day: DayCallback | None = None,
) -> DayCounts:
    """Validate each staged day of ``interval`` and publish it as a raw partition.

    Raises:
        BatchQuarantined: A batch failed its suite; it is quarantined with its
            validation result and the message names the failed expectations.
    """
    return _each_day(dataset, interval, settings, on_day, _publish_day)
