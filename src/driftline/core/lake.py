"""The data lake: day partitions of Parquet files behind any fsspec URI.

Layout (``zone`` is ``landing``, ``staging``, ``raw``, ``features`` or ``quarantine``)::

    {lake_uri}/{zone}/{dataset}/dt=YYYY-MM-DD/part-0.parquet

A partition is replaced as a whole: the new content is written beside it under a
hidden name and swapped in by renames, so readers see the old or the new
partition, never a mix, and no other partition is touched. Files are written
deterministically (sorted rows, fixed writer options, no wall-clock metadata), so
rerunning a day reproduces the same bytes.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterable
from datetime import date
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from driftline.core.atomic import filesystem as filesystem
from driftline.core.atomic import write_atomic

log = logging.getLogger(__name__)

PART_FILE = "part-0.parquet"


def partition_uri(lake_uri: str, zone: str, dataset: str, day: date) -> str:
    """URI of one day partition (a folder)."""
    return f"{lake_uri.rstrip('/')}/{zone}/{dataset}/dt={day:%Y-%m-%d}"


def partition_file(lake_uri: str, zone: str, dataset: str, day: date) -> str:
    """URI of the single Parquet file inside a day partition."""
    return f"{partition_uri(lake_uri, zone, dataset, day)}/{PART_FILE}"


def landing_file(lake_uri: str, dataset: str, day: date) -> str:
    """URI of the landing file the upstream system drops for ``dataset`` on ``day``."""
    return f"{lake_uri.rstrip('/')}/landing/{dataset}/dt={day:%Y-%m-%d}/{dataset}.parquet"


def exists(uri: str) -> bool:
    """Whether a file or folder exists at ``uri``."""
    fs, path = filesystem(uri)
    return bool(fs.exists(path))


def _write_parquet(table: pa.Table, handle: IO[bytes]) -> None:
    """Write ``table`` to ``handle`` with fixed options so equal tables give equal bytes."""
    # Row groups of 128k rows let Spark split one day file across its cores.
    pq.write_table(
        table.replace_schema_metadata(None),
        handle,
        compression="zstd",
        write_statistics=True,
        row_group_size=131_072,
    )


def write_file(uri: str, table: pa.Table) -> None:
    """Write ``table`` to the single file ``uri`` atomically (:func:`write_atomic`).

    Equal tables give equal bytes; readers never see a half-written file.
    """
    write_atomic(uri, lambda handle: _write_parquet(table, handle))


def replace_partition(
    lake_uri: str,
    zone: str,
    dataset: str,
    day: date,
    table: pa.Table | None,
    extra_files: dict[str, bytes] | None = None,
) -> str:
    """Atomically replace one day partition with ``table`` (plus optional side files).

    Args:
        lake_uri: Root of the lake.
        zone: Lake zone, e.g. ``raw``.
        dataset: Dataset name, e.g. ``transactions``.
        day: The partition's day.
        table: Content of the partition (``part-0.parquet``); ``None`` when
            ``extra_files`` hold all of it (e.g. a landed file's bytes, unchanged).
        extra_files: Other files to place in the partition (name -> bytes), written
            before the swap so they appear together with the data.

    Returns:
        The partition's URI.

    Whatever fails, no hidden ``.dt=...tmp-``/``.old-`` folder is left behind, and the
    previous partition is back in place when the new one could not be moved in.
    """
    target = partition_uri(lake_uri, zone, dataset, day)
    fs, final = filesystem(target)
    parent, name = final.rsplit("/", 1)
    token = uuid.uuid4().hex[:12]
    tmp, old = f"{parent}/.{name}.tmp-{token}", f"{parent}/.{name}.old-{token}"
    had_old = False
    try:
        fs.makedirs(tmp, exist_ok=True)
        if table is not None:
            with fs.open(f"{tmp}/{PART_FILE}", "wb") as handle:
                _write_parquet(table, handle)
        for file_name, payload in (extra_files or {}).items():
            fs.pipe_file(f"{tmp}/{file_name}", payload)
        had_old = bool(fs.exists(final))
        if had_old:
            fs.mv(final, old, recursive=True)
        try:
            fs.mv(tmp, final, recursive=True)
        except BaseException:
            if had_old and not fs.exists(final):
                fs.mv(old, final, recursive=True)  # put the previous partition back
            raise
    finally:
        for leftover in (tmp, old):
            if fs.exists(leftover):
                fs.rm(leftover, recursive=True)
    rows = table.num_rows if table is not None else "-"
    log.info("replaced partition %s (%s rows)", target, rows)
    return target


def remove_partition(lake_uri: str, zone: str, dataset: str, day: date) -> None:
    """Delete one day partition if it exists."""
    fs, path = filesystem(partition_uri(lake_uri, zone, dataset, day))
    if fs.exists(path):
        fs.rm(path, recursive=True)


def read_file(uri: str) -> pa.Table:
    """Read one Parquet file into an Arrow table."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as handle:
        return pq.read_table(handle)


def read_partitions(
    lake_uri: str, zone: str, dataset: str, days: Iterable[date], schema: pa.Schema
) -> pa.Table:
    """Concatenate the existing partitions among ``days`` (missing days are skipped)."""
    tables = [
        read_file(uri).select(schema.names).cast(schema)
        for day in days
        if exists(uri := partition_file(lake_uri, zone, dataset, day))
    ]
    return pa.concat_tables(tables) if tables else schema.empty_table()


def existing_partition_files(
    lake_uri: str, zone: str, dataset: str, days: Iterable[date]
) -> list[str]:
    """URIs of the partition files that exist among ``days``, oldest first."""
    return [
        uri for day in sorted(days) if exists(uri := partition_file(lake_uri, zone, dataset, day))
    ]


def write_json(uri: str, payload: dict[str, Any]) -> None:
    """Write ``payload`` as pretty, key-sorted JSON to ``uri``."""
    fs, path = filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, json.dumps(payload, indent=2, sort_keys=True, default=str).encode())
