"""Chargebacks checked against the transactions they refer to.

A chargeback (a row of ``labels``) names a transaction by ``transaction_id``, with its
``user_id``, ``merchant_id`` and ``transaction_ts``. It is *known* when the raw
transactions partition of its transaction's day holds that id with the same user and
merchant. The rule:

* **Publishing labels of day D** keeps only known chargebacks in ``raw/labels/dt=D``.
  The others (*orphans*: the transaction never landed, its day was quarantined or is
  not published yet, or user/merchant disagree) are set apart: a quarantine entry
  ``quarantine/labels/dt=D/attempt=<n>/orphans.parquet`` with ``reason.json`` (a reason
  per row), and the pending set ``pending/labels/dt=D/part-0.parquet`` replaced with
  the day's current orphans. The rest of the batch passes. The feature job reads raw
  labels only, so orphans are never counted.
* **Publishing transactions of day T** re-checks every pending orphan whose transaction
  is on day T: the ones now known are added to the raw labels of their report day (the
  pending set shrinks; empty, it is removed). Feature partitions of days from that
  report day on that were built before are not rebuilt by this: rerun ``features`` for
  them (the log names the days).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from driftline.core import lake
from driftline.core.schemas import LABELS
from driftline.core.settings import Settings
from driftline.data import quarantine

log = logging.getLogger(__name__)

PENDING_ZONE = "pending"
KEYS = ["transaction_id", "user_id", "merchant_id"]
#: Seconds to wait for a labels day held by another run when picking up orphans.
PICKUP_WAIT_S = 120.0


@dataclass(frozen=True)
class LabelCheck:
    """Chargebacks of one batch split by whether their transaction is known."""

    known: pa.Table
    orphans: pa.Table  # LABELS columns + ``reason``


def transaction_days(labels: pa.Table) -> list[date]:
    """The distinct days of the transactions ``labels`` refer to."""
    if labels.num_rows == 0:
        return []
    stamps = labels.column("transaction_ts").cast(pa.timestamp("us", tz="UTC"))
    days = pc.unique(pc.floor_temporal(stamps, unit="day")).to_pylist()
    return sorted({d.date() for d in days if d is not None})


def _day_of(labels: pa.Table) -> pa.Array:
    stamps = labels.column("transaction_ts").cast(pa.timestamp("us", tz="UTC"))
    return pc.floor_temporal(stamps, unit="day").combine_chunks()


def _missing_day_reason(settings: Settings, day: date) -> str:
    latest = quarantine.latest_reason(settings.lake_uri, "transactions", day)
    if latest is not None:
        return f"its transaction day {day} was quarantined ({latest[0]})"
    return f"its transaction day {day} has no published transactions"


def check_labels(labels: pa.Table, settings: Settings) -> LabelCheck:
    """Split ``labels`` (canonical schema) into known chargebacks and orphans with reasons."""
    known_parts, orphan_parts = [], []
    days = _day_of(labels)
    for day in transaction_days(labels):
        start = pa.scalar(datetime(day.year, day.month, day.day, tzinfo=UTC), days.type)
        rows = labels.filter(pc.equal(days, start))
        uri = lake.partition_file(settings.lake_uri, "raw", "transactions", day)
        if not lake.exists(uri):
            reason = _missing_day_reason(settings, day)
            orphan_parts.append(_with_reason(rows, reason))
            continue
        fs, path = lake.filesystem(uri)
        with fs.open(path, "rb") as handle:
            tx = pq.read_table(handle, columns=KEYS)
        found = rows.join(tx, keys=KEYS, join_type="left semi")
        lost = rows.join(tx, keys=KEYS, join_type="left anti")
        known_parts.append(found.select(LABELS.names))
        if lost.num_rows:
            reason = f"no transaction with this id, user and merchant on {day}"
            orphan_parts.append(_with_reason(lost.select(LABELS.names), reason))
    known = pa.concat_tables(known_parts) if known_parts else labels.slice(0, 0)
    orphans = (
        pa.concat_tables(orphan_parts) if orphan_parts else _with_reason(labels.slice(0, 0), "")
    )
    return LabelCheck(known.select(LABELS.names).cast(LABELS), orphans)


def _with_reason(rows: pa.Table, reason: str) -> pa.Table:
    table = rows.select(LABELS.names).cast(LABELS)
    return table.append_column("reason", pa.array([reason] * table.num_rows, pa.string()))


def pending_file(settings: Settings, day: date) -> str:
    """The pending orphans of the labels published for ``day``."""
    return lake.partition_file(settings.lake_uri, PENDING_ZONE, "labels", day)


def set_pending(settings: Settings, day: date, orphans: pa.Table) -> None:
    """Replace the pending orphans of labels day ``day`` (removed when there are none)."""
    if orphans.num_rows:
        lake.replace_partition(settings.lake_uri, PENDING_ZONE, "labels", day, orphans)
    else:
        lake.remove_partition(settings.lake_uri, PENDING_ZONE, "labels", day)


def record_orphans(settings: Settings, day: date, orphans: pa.Table, landed: str) -> str:
    """Write the quarantine entry of ``orphans`` set apart from labels day ``day``."""
    counts: dict[str, int] = {}
    for reason in orphans.column("reason").to_pylist():
        counts[reason] = counts.get(reason, 0) + 1
    summary = "; ".join(f"{n} chargebacks: {r}" for r, n in sorted(counts.items()))
    reason = (
        f"{orphans.num_rows} chargebacks of labels {day} refer to unknown transactions and "
        f"were set apart (not published, never counted in features): {summary}. They are "
        "picked up when their transaction's day is published."
    )
    sink = pa.BufferOutputStream()
    pq.write_table(orphans, sink)
    return quarantine.put_entry(
        settings.lake_uri,
        "labels",
        day,
        {"orphans.parquet": sink.getvalue().to_pybytes()},
        reason,
        {"orphans": orphans.num_rows, "by_reason": counts, "landed_file": landed},
        result_name="reason.json",
    )


def pending_days(settings: Settings) -> list[date]:
    """Labels days that have pending orphans."""
    root = f"{settings.lake_uri.rstrip('/')}/{PENDING_ZONE}/labels"
    fs, path = lake.filesystem(root)
    if not fs.exists(path):
        return []
    found = []
    for child in fs.ls(path, detail=False):
        name = str(child).rstrip("/").rsplit("/", 1)[-1]
        if name.startswith("dt="):
            found.append(date.fromisoformat(name.removeprefix("dt=")))
    return sorted(found)


def pick_up(settings: Settings, tx_day: date) -> dict[str, int]:
    """Add the pending chargebacks whose transactions day ``tx_day`` now holds.

    Called after the transactions of ``tx_day`` were published. Returns the number of
    chargebacks added per labels day.
    """
    from driftline.data.ingest import canonicalize
    from driftline.data.locks import day_lock

    added: dict[str, int] = {}
    for day in pending_days(settings):
        pending = lake.read_file(pending_file(settings, day))
        if tx_day not in transaction_days(pending):
            continue
        with day_lock(settings, "labels", day, wait_s=PICKUP_WAIT_S):
            if not lake.exists(pending_file(settings, day)):
                continue
            pending = lake.read_file(pending_file(settings, day))
            check = check_labels(pending.select(LABELS.names), settings)
            if check.known.num_rows == 0:
                continue
            raw = lake.read_partitions(settings.lake_uri, "raw", "labels", [day], LABELS)
            merged = canonicalize(pa.concat_tables([raw, check.known]), "labels")
            lake.replace_partition(settings.lake_uri, "raw", "labels", day, merged)
            set_pending(settings, day, check.orphans)
        added[day.isoformat()] = check.known.num_rows
        log.warning(
            "picked up %d chargebacks of labels %s whose transactions arrived with %s; "
            "rerun features for the days from %s that were built before",
            check.known.num_rows,
            day,
            tx_day,
            day,
        )
    return added
