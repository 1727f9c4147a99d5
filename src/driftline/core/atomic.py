"""The one way driftline replaces a file: readers see the old content or the new, never half.

:func:`write_atomic` writes the new content to a hidden temporary file beside the target
(same folder, so the final move is a rename on a local disk) and moves it over the
target only once it is complete; a failed write removes the temporary file and leaves
the target as it was.

The target is either a local :class:`~pathlib.Path` (state under ``DRIFTLINE_HOME``:
drift reports, training checkpoints), written with the local filesystem exactly as
named, or a ``str`` URI (a local path or any fsspec URI such as ``s3://bucket/lake``:
the data lake). On object stores the move is a copy and a delete; they have no rename,
but the target never holds a partial object either, since an upload appears only once
it is complete.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from fsspec.spec import AbstractFileSystem


def filesystem(uri: str) -> tuple[AbstractFileSystem, str]:
    """Return the fsspec filesystem for ``uri`` and the path inside it."""
    fs, path = fsspec.core.url_to_fs(uri)
    return fs, str(path).rstrip("/")


def _target(target: str | Path) -> tuple[AbstractFileSystem, str]:
    """Filesystem and path of ``target``: a Path is local as named, a str is a URI."""
    if isinstance(target, Path):
        return LocalFileSystem(), str(target.absolute())
    return filesystem(target)


def write_atomic(
    target: str | Path, write: Callable[[IO[bytes]], Any], *, fsync: bool = False
) -> None:
    """Replace the file ``target`` with what ``write`` writes, atomically.

    Args:
        target: The file to create or replace: a local ``Path``, or a ``str`` that is a
            local path or an fsspec URI. Its folder is created when missing.
        write: Called once with a binary handle open on the temporary file.
        fsync: Flush the temporary file to the disk before the move, so that a crash of
            the machine cannot leave the target empty (local files only; a remote
            object is durable once its upload is complete).
    """
    fs, path = _target(target)
    parent, name = path.rsplit("/", 1)
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:12]}"
    try:
        with fs.open(tmp, "wb") as handle:
            write(handle)
            if fsync and isinstance(fs, LocalFileSystem):
                handle.flush()
                os.fsync(handle.fileno())
        fs.mv(tmp, path)
    except BaseException:
        if fs.exists(tmp):
            fs.rm(tmp)
        raise


def put_atomic(target: str | Path, payload: bytes) -> None:
    """Replace the file ``target`` with ``payload`` so that no reader sees half of it.

    On a local disk this is :func:`write_atomic` (write aside, rename). On an object
    store it is one upload of the whole object, which is atomic already: no temporary
    object appears beside the target, so a reader listing the folder never meets one.
    """
    fs, path = _target(target)
    if isinstance(fs, LocalFileSystem):
        write_atomic(target, lambda handle: handle.write(payload))
    else:
        fs.pipe_file(path, payload)
