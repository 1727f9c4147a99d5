"""One run at a time per dataset and day.

:func:`day_lock` holds an exclusive lock named after the dataset and the day while a
stage changes that day's partitions (staging, raw, quarantine), so two runs of the same
day (a scheduled run and a manual rerun, two backfills) cannot interleave their writes.
The second run does not wait: it fails at once with :class:`DayLocked`, naming the day
and the lock, and changes nothing.

Where the lock lives:

* **local lake** (a path or ``file://``): a :class:`filelock.FileLock` file
  ``{lake}/_locks/{dataset}/dt=YYYY-MM-DD.lock``. The operating system releases it when
  the holding process dies, so a crash never leaves a day locked.
* **object-store lake** (``s3://`` and other fsspec URIs): the same file lock under
  ``$DRIFTLINE_HOME/locks/``, which serialises the runs of one machine (the embedded
  and single-host production profiles). Runs on several machines against one bucket
  need a shared lock instead: an S3 conditional put (``PutObject`` with
  ``If-None-Match: *`` on ``_locks/{dataset}/dt=D.lock``, deleted on release, with a
  lease time for crashed holders) or a DynamoDB conditional write (``attribute_not_exists``
  on the key ``dataset#day``). That shared lock is not built.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

from filelock import FileLock, Timeout
from fsspec.implementations.local import LocalFileSystem

from driftline.core.atomic import filesystem
from driftline.core.settings import Settings
from driftline.data.errors import DayLocked

log = logging.getLogger(__name__)

LOCKS_FOLDER = "_locks"


def lock_path(settings: Settings, dataset: str, day: date) -> Path:
    """The lock file of ``dataset`` on ``day`` (see the module docstring for where)."""
    fs, root = filesystem(settings.lake_uri)
    name = f"dt={day:%Y-%m-%d}.lock"
    if isinstance(fs, LocalFileSystem):
        return Path(root) / LOCKS_FOLDER / dataset / name
    lake_key = hashlib.sha256(settings.lake_uri.encode()).hexdigest()[:12]
    return settings.home / "locks" / lake_key / dataset / name


@contextmanager
def day_lock(settings: Settings, dataset: str, day: date, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the lock of ``dataset`` on ``day`` for the duration of the block.

    Args:
        settings: Where the lake is.
        dataset: ``transactions``, ``labels`` or another lake dataset.
        day: The day.
        wait_s: How long to wait for another holder (0: fail at once).

    Raises:
        DayLocked: Another run holds the day.
    """
    path = lock_path(settings, dataset, day)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=wait_s)
    try:
        lock.acquire()
    except Timeout as held:
        raise DayLocked(
            f"another run holds dataset {dataset} day {day} (lock {path}); wait for it to "
            "finish, then run this stage again if it is still needed"
        ) from held
    try:
        yield
    finally:
        lock.release()
