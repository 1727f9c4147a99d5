"""Ingest: landing files -> staged batches -> (validation gate) -> raw day partitions.

``ingest`` copies each day's landing file of the interval into the staging zone,
byte for byte, so validation judges exactly what arrived; a file that is not Parquet
(empty, truncated, CSV or JSON under a ``.parquet`` name) is quarantined at once with
the format that was found. ``publish_validated`` runs the non-finite check and the
dataset's Great Expectations suite on each staged batch and then either publishes it
as the raw partition (cast to the canonical schema, sorted, replaced atomically) or
quarantines it with the validation result and raises. Chargebacks are also checked
against the transactions they refer to (:mod:`driftline.data.orphans`).

What a rejection never touches: earlier raw partitions, the day's own previous raw,
staged and feature partitions (a re-delivery over a good day is staged beside the
accepted copy, which is put back when the re-delivery is rejected), and earlier
quarantine entries (:mod:`driftline.data.quarantine`). Each stage holds the lock of the
dataset and day (:mod:`driftline.data.locks`): a second run of the same day fails at
once with :class:`DayLocked` and changes nothing.
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
from driftline.data import quarantine as quarantine_zone
from driftline.data.errors import BatchQuarantined, DataError, DayLocked, LandingFileError
from driftline.data.locks import day_lock

__all__ = [
    "BatchQuarantined",
    "DataError",
    "DayCounts",
    "DayLocked",
    "LandingFileError",
    "canonicalize",
    "ingest",
    "publish_validated",
    "quarantine",
]

log = logging.getLogger(__name__)

DayCallback = Callable[[date], None]


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
    """Put a rejected batch and the reason it was rejected into a new quarantine entry.

    Returns:
        The URI of the entry (``.../dt=D/attempt=<n>``); earlier entries stay.
    """
    return quarantine_zone.put_entry(
        lake_uri, dataset, day, {f"{dataset}.parquet": payload}, reason, result
    )


def _each_day(
    dataset: str,
    interval: Interval,
    settings: Settings | None,
    on_day: DayCallback | None,
    handle_day: Callable[[Settings, str, date], int],
) -> DayCounts:
    """Run ``handle_day`` for every day of ``interval``, oldest first, counting rows.

    Each day runs under the lock of ``dataset`` and that day.
    """
    _check_dataset(dataset)
    cfg = settings or get_settings()
    rows: dict[str, int] = {}
    for day in interval.days():
        with day_lock(cfg, dataset, day):
            rows[day.isoformat()] = handle_day(cfg, dataset, day)
        if on_day:
            on_day(day)
    return DayCounts(dataset, rows)


#: Where the accepted staged copy of a day waits while a re-delivery of it is judged.
PREVIOUS_ZONE = "staging/_accepted"


def _next_steps(dataset: str, day: date, landing: str) -> str:
    return (
        f"land a corrected file at {landing}, then run `driftline ingest --dataset {dataset} "
        f"--start {day}` and `driftline validate --dataset {dataset} --start {day}`"
    )


def _stage_day(cfg: Settings, dataset: str, day: date) -> int:
    """Copy one landing file into staging unchanged; returns its row count."""
    lake_uri = cfg.lake_uri
    source = lake.landing_file(lake_uri, dataset, day)
    if not lake.exists(source):
        raise LandingFileError(
            f"no landing file for {dataset} on {day}: {source} does not exist; land the "
            f"day's file there (or `driftline simulate --start {day}`), then run "
            f"`driftline ingest --dataset {dataset} --start {day}`"
        )
    fs, path = lake.filesystem(source)
    payload = fs.cat_file(path)
    found = quarantine_zone.describe_format(payload)
    try:
        if found != "Parquet":
            raise pa.ArrowInvalid(f"found {found} where Parquet was expected")
        table = pq.read_table(pa.BufferReader(payload))  # parse the bytes already read
    except (pa.ArrowInvalid, OSError) as error:
        reason = (
            f"landing file {source} for {dataset} on {day} is empty or unreadable: found "
            f"{found} where Parquet was expected ({error})"
        )
        where = quarantine_zone.put_entry(
            lake_uri,
            dataset,
            day,
            {path.rsplit("/", 1)[-1]: payload},
            reason,
            {"error": str(error), "format": found, "landing_file": source},
        )
        raise BatchQuarantined(
            f"{reason}; the file is quarantined unchanged at {where}; "
            f"{_next_steps(dataset, day, source)}",
            where,
        ) from error
    staged = lake.partition_uri(lake_uri, "staging", dataset, day)
    accepted = lake.partition_uri(lake_uri, PREVIOUS_ZONE, dataset, day)
    published = lake.exists(lake.partition_uri(lake_uri, "raw", dataset, day))
    if published and lake.exists(staged) and not lake.exists(accepted):
        # A re-delivery of a good day: keep the accepted copy until the gate has judged.
        lake.move_folder(staged, accepted)
    lake.replace_partition(lake_uri, "staging", dataset, day, None, {lake.PART_FILE: payload})
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
        BatchQuarantined: A landing file is empty or not Parquet (it is quarantined
            unchanged, and the message names the format found).
        DayLocked: Another run holds a day.
    """
    return _each_day(dataset, interval, settings, on_day, _stage_day)


def canonicalize(table: pa.Table, dataset: str) -> pa.Table:
    """Cast a validated batch to the canonical schema, sorted deterministically."""
    schema = SCHEMAS[dataset]
    typed = table.select(schema.names).cast(schema)
    order = [(EVENT_TIME_COLUMN[dataset], "ascending"), ("transaction_id", "ascending")]
    return typed.take(pc.sort_indices(typed, sort_keys=order))


def _restore_accepted(cfg: Settings, dataset: str, day: date) -> None:
    """After a rejection: put the day's accepted staged copy back (or drop the batch)."""
    accepted = lake.partition_uri(cfg.lake_uri, PREVIOUS_ZONE, dataset, day)
    lake.remove_partition(cfg.lake_uri, "staging", dataset, day)
    if lake.exists(accepted):
        lake.move_folder(accepted, lake.partition_uri(cfg.lake_uri, "staging", dataset, day))


def _nothing_staged(cfg: Settings, dataset: str, day: date) -> LandingFileError:
    landing = lake.landing_file(cfg.lake_uri, dataset, day)
    latest = quarantine_zone.latest_reason(cfg.lake_uri, dataset, day)
    if latest is not None and not lake.exists(
        lake.partition_uri(cfg.lake_uri, "raw", dataset, day)
    ):
        entry, reason = latest
        return LandingFileError(
            f"nothing staged for {dataset} on {day}: its last delivery was quarantined at "
            f"{entry} ({reason}); {_next_steps(dataset, day, landing)}"
        )
    return LandingFileError(
        f"nothing staged for {dataset} on {day}; run `driftline ingest --dataset {dataset} "
        f"--start {day}` first (it reads {landing})"
    )


def _publish_day(cfg: Settings, dataset: str, day: date) -> int:
    """Validate one staged batch, then publish it or quarantine it."""
    from driftline.data import orphans
    from driftline.data.validate import describe_failures, validate_frame

    staged_uri = lake.partition_file(cfg.lake_uri, "staging", dataset, day)
    if not lake.exists(staged_uri):
        raise _nothing_staged(cfg, dataset, day)
    fs, path = lake.filesystem(staged_uri)
    payload = fs.cat_file(path)
    table = pq.read_table(pa.BufferReader(payload))
    outcome = validate_frame(table, f"raw_{dataset}", Interval.for_day(day), cfg)
    if not outcome.success:
        reason = describe_failures(outcome)
        where = quarantine(cfg.lake_uri, dataset, day, reason, payload, outcome.result)
        _restore_accepted(cfg, dataset, day)
        raise BatchQuarantined(
            f"{dataset} batch for {day} failed validation and was quarantined at {where}: "
            f"{reason} Next: "
            f"{_next_steps(dataset, day, lake.landing_file(cfg.lake_uri, dataset, day))}",
            where,
        )
    canonical = canonicalize(table, dataset)
    if dataset == "labels":
        check = orphans.check_labels(canonical, cfg)
        if check.orphans.num_rows:
            orphans.record_orphans(cfg, day, check.orphans, staged_uri)
        canonical = canonicalize(check.known, dataset)
        orphans.set_pending(cfg, day, check.orphans)
    # The staged batch stays as the record of what was last received and accepted (DVC
    # tracks it); the next ingest of the day replaces it.
    lake.replace_partition(cfg.lake_uri, "raw", dataset, day, canonical)
    lake.remove_partition(cfg.lake_uri, PREVIOUS_ZONE, dataset, day)
    if dataset == "transactions":
        orphans.pick_up(cfg, day)
    return int(canonical.num_rows)


def publish_validated(
    dataset: str,
    interval: Interval,
    settings: Settings | None = None,
    on_day: DayCallback | None = None,
) -> DayCounts:
    """Validate each staged day of ``interval`` and publish it as a raw partition.

    Chargebacks whose transaction is unknown are set apart (not an error; see
    :mod:`driftline.data.orphans`); publishing transactions picks up the pending
    chargebacks that refer to them. Returns the rows published per day.

    Raises:
        BatchQuarantined: A batch failed its suite; it is quarantined with its
            validation result and the message names the failed expectations.
        LandingFileError: Nothing is staged for a day (the message says why and what
            to run).
        DayLocked: Another run holds a day.
    """
    return _each_day(dataset, interval, settings, on_day, _publish_day)
