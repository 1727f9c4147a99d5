"""The data lake: day partitions of Parquet files behind any fsspec URI.

Layout (``zone`` is ``landing``, ``staging``, ``raw``, ``features`` or ``quarantine``)::

    {lake_uri}/{zone}/{dataset}/dt=YYYY-MM-DD/part-0.parquet

A partition is replaced as a whole: on a local disk the new content is written beside
it under a hidden name and swapped in by renames, so readers see the old or the new
partition, never a mix, and no other partition is touched. On an object store (the
production lake, ``s3://bucket/lake``) there is no rename (a "move" is a copy and a
delete per object), so each file of the partition is uploaded once under its final
key, which is atomic per object: a reader sees the old or the new file, never half of
one, and no temporary object ever appears beside it (:func:`~driftline.core.atomic.put_atomic`).
A lake partition is a single data file plus side files, so a reader of the data sees
the old or the new partition there too. Files are written deterministically (sorted
rows, fixed writer options, no wall-clock metadata), so rerunning a day reproduces the
same bytes.

On S3, s3fs (and Feast's readers, pyarrow's S3 filesystem) find the endpoint through
the standard AWS variables (``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL``, see
:func:`s3_endpoint`), as a deployment points them at any S3-compatible store.
"""

from __future__ import annotations

import io
import json
import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from datetime import date
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem

from driftline.core.atomic import filesystem as filesystem
from driftline.core.atomic import put_atomic

log = logging.getLogger(__name__)

PART_FILE = "part-0.parquet"
#: The standard variables naming a custom S3 endpoint, most specific first (botocore's
#: order: the S3 service's own variable, then the one for every service).
S3_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def s3_endpoint() -> str | None:
    """The custom S3 endpoint of this process's environment (a moto server, MinIO), if any.

    Readers that do not look at the AWS variables themselves take it explicitly: the
    Feast file source's ``s3_endpoint_override``, Spark's ``s3a`` endpoint.
    """
    for name in S3_ENDPOINT_VARIABLES:
        if value := os.environ.get(name):
            return value
    return None


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


def parquet_bytes(table: pa.Table) -> bytes:
    """``table`` as the bytes of a lake Parquet file (equal tables, equal bytes)."""
    sink = io.BytesIO()
    _write_parquet(table, sink)
    return sink.getvalue()


def write_file(uri: str, table: pa.Table) -> None:
    """Write ``table`` to the single file ``uri`` atomically (:func:`put_atomic`).

    Equal tables give equal bytes; readers never see a half-written file (on a local
    disk a rename, on an object store one upload of the whole object).
    """
    put_atomic(uri, parquet_bytes(table))


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

    On a local disk, whatever fails, no hidden ``.dt=...tmp-``/``.old-`` folder is left
    behind, and the previous partition is back in place when the new one could not be
    moved in. On an object store each file is one upload under its final key, then the
    previous partition's other objects are deleted (see the module docstring).
    """
    target = partition_uri(lake_uri, zone, dataset, day)
    fs, final = filesystem(target)
    files = dict(extra_files or {})
    if table is not None:
        files = {PART_FILE: parquet_bytes(table), **files}
    if isinstance(fs, LocalFileSystem):
        _swap_local(fs, final, files)
    else:
        _put_objects(fs, final, files)
    rows = table.num_rows if table is not None else "-"
    log.info("replaced partition %s (%s rows)", target, rows)
    return target


def _put_objects(fs: AbstractFileSystem, final: str, files: dict[str, bytes]) -> None:
    """Replace the objects under ``final`` with ``files``: one upload each, then deletes.

    No temporary object is written (an object store's move would be a second copy),
    and a rerun with equal content rewrites the same keys with the same bytes.
    """
    fs.invalidate_cache(final)  # another process may have written the partition
    found = fs.find(final) if fs.exists(final) else []
    stale = [path for path in found if path.removeprefix(f"{final}/") not in files]
    for file_name, payload in files.items():
        fs.pipe_file(f"{final}/{file_name}", payload)
    if stale:
        fs.rm(stale)


def _swap_local(fs: AbstractFileSystem, final: str, files: dict[str, bytes]) -> None:
    """Write ``files`` into a hidden folder beside ``final``, then swap it in by renames."""
    parent, name = final.rsplit("/", 1)
    token = uuid.uuid4().hex[:12]
    tmp, old = f"{parent}/.{name}.tmp-{token}", f"{parent}/.{name}.old-{token}"
    had_old = False
    try:
        fs.makedirs(tmp, exist_ok=True)
        for file_name, payload in files.items():
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


def move_folder(source: str, target: str) -> None:
    """Move the folder ``source`` to ``target`` (which must not exist), both lake URIs.

    A rename on a local disk. On an object store, each object is copied under its new
    key, then the originals are deleted (an object store has no rename; fsspec's
    recursive move also tries to copy the folder's own name, which is no object).
    """
    fs, src = filesystem(source)
    _, dst = filesystem(target)
    if isinstance(fs, LocalFileSystem):
        fs.makedirs(dst.rsplit("/", 1)[0], exist_ok=True)
        fs.mv(src, dst, recursive=True)
        return
    fs.invalidate_cache(src)  # another process may have written the folder
    found = fs.find(src)
    for path in found:
        fs.copy(path, f"{dst}/{path.removeprefix(f'{src}/')}")
    if found:
        fs.rm(found)


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


def write_json(uri: str | Path, payload: Mapping[str, Any]) -> None:
    """Replace the file ``uri`` with ``payload`` as indented, key-sorted JSON.

    Whole or not at all (:func:`put_atomic`): a reader never sees half a file. Values
    JSON cannot hold (dates, paths) are written as their ``str``.
    """
    text = json.dumps(payload, indent=2, sort_keys=True, default=str)
    put_atomic(uri, (text + "\n").encode("utf-8"))
