"""Where and how the monitoring plane keeps its state: in the lake, one format.

Everything lives under ``{lake}/monitoring/`` (``settings.lake_uri``: a local folder by
default, or any fsspec URI such as ``s3://bucket/lake``), so every monitoring run, on
any machine, sees the same drift log, reports and references::

    {lake}/monitoring/drift_log/results/dt=YYYY-MM-DD.json   one object per checked day
    {lake}/monitoring/drift_log/triggers/dt=YYYY-MM-DD.json  one object per trigger
    {lake}/monitoring/reports/dt=YYYY-MM-DD/drift_report.html, drift.json
    {lake}/monitoring/reference/v<version>.parquet

Each file is replaced whole (:func:`~driftline.core.lake.write_json`,
:func:`~driftline.core.atomic.put_atomic`): readers never see half of one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from driftline.core.atomic import filesystem
from driftline.core.settings import Settings

FOLDER = "monitoring"


def monitoring_uri(settings: Settings, *parts: str) -> str:
    """URI of ``parts`` under the lake's monitoring folder."""
    return "/".join([settings.lake_uri.rstrip("/"), FOLDER, *parts])


def read_json(target: str | Path) -> Any:
    """The JSON content of the file ``target``."""
    fs, path = filesystem(str(target))
    return json.loads(fs.cat_file(path).decode("utf-8"))


def remove(target: str | Path) -> None:
    """Delete the file ``target`` if it exists."""
    fs, path = filesystem(str(target))
    if fs.exists(path):
        fs.rm_file(path)


def list_files(folder: str, suffix: str) -> list[str]:
    """URIs of the files directly in ``folder`` ending in ``suffix``, sorted (fresh listing).

    Hidden names (a local write's temporary file) are left out; a missing folder is empty.
    """
    fs, path = filesystem(folder)
    fs.invalidate_cache(path)  # object stores cache listings; another run may have written
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    names = sorted(str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in entries)
    return [
        f"{folder.rstrip('/')}/{name}"
        for name in names
        if name.endswith(suffix) and not name.startswith(".")
    ]
