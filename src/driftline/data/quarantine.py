"""The quarantine zone: what was rejected, exactly as it arrived, and why.

Each rejection is its own entry, never overwritten::

    {lake}/quarantine/{dataset}/dt=YYYY-MM-DD/attempt=<n>/
        <file as it landed>          the landed bytes, unchanged
        validation_result.json       {"reason": ..., "result": <GX result or error>}
        reason.txt                   the reason in one paragraph

``n`` counts from 1 per dataset and day; a later rejection of the same day takes the
next number, so every earlier entry stays as it was. Chargebacks set apart because
their transaction is unknown are entries of the ``labels`` dataset holding
``orphans.parquet`` and ``reason.json`` instead (see :mod:`driftline.data.orphans`).
"""

from __future__ import annotations

import json
import logging
import re
from datetime import date
from typing import Any

from driftline.core import lake

log = logging.getLogger(__name__)

ZONE = "quarantine"
_ATTEMPT = re.compile(r"attempt=(\d+)$")


def day_uri(lake_uri: str, dataset: str, day: date) -> str:
    """The folder holding every quarantine entry of ``dataset`` on ``day``."""
    return lake.partition_uri(lake_uri, ZONE, dataset, day)


def entries(lake_uri: str, dataset: str, day: date) -> list[str]:
    """URIs of the quarantine entries of ``dataset`` on ``day``, oldest first."""
    fs, path = lake.filesystem(day_uri(lake_uri, dataset, day))
    if not fs.exists(path):
        return []
    numbered = []
    for child in fs.ls(path, detail=False):
        match = _ATTEMPT.search(str(child).rstrip("/"))
        if match:
            numbered.append(int(match.group(1)))
    base = day_uri(lake_uri, dataset, day)
    return [f"{base}/attempt={n}" for n in sorted(numbered)]


def latest_reason(lake_uri: str, dataset: str, day: date) -> tuple[str, str] | None:
    """The newest entry of ``dataset`` on ``day`` and its reason, if any."""
    found = entries(lake_uri, dataset, day)
    if not found:
        return None
    entry = found[-1]
    fs, path = lake.filesystem(entry)
    for name in ("validation_result.json", "reason.json"):
        if fs.exists(f"{path}/{name}"):
            return entry, str(json.loads(fs.cat_file(f"{path}/{name}")).get("reason", ""))
    return entry, ""


def put_entry(
    lake_uri: str,
    dataset: str,
    day: date,
    files: dict[str, bytes],
    reason: str,
    result: dict[str, Any],
    *,
    result_name: str = "validation_result.json",
) -> str:
    """Write a new quarantine entry (the next ``attempt=<n>``) and return its URI.

    Args:
        lake_uri: Root of the lake.
        dataset: The rejected dataset.
        day: Its day.
        files: Files of the entry, e.g. the landed file's name -> its bytes, unchanged.
        reason: Why it was rejected (also written to ``reason.txt``).
        result: The validation result or error details, stored with the reason.
        result_name: File name of the JSON holding ``reason`` and ``result``.
    """
    fs, _ = lake.filesystem(lake_uri)
    attempt = len(entries(lake_uri, dataset, day)) + 1
    while True:  # claim a fresh attempt number even against a concurrent writer
        entry = f"{day_uri(lake_uri, dataset, day)}/attempt={attempt}"
        _, path = lake.filesystem(entry)
        try:
            fs.makedirs(path, exist_ok=False)
            break
        except FileExistsError:
            attempt += 1
    for name, payload in files.items():
        fs.pipe_file(f"{path}/{name}", payload)
    fs.pipe_file(f"{path}/reason.txt", reason.encode() + b"\n")
    lake.write_json(f"{entry}/{result_name}", {"reason": reason, "result": result})
    log.error("quarantined %s %s (%s): %s", dataset, day, entry, reason)
    return entry


def describe_format(payload: bytes) -> str:
    """What a file that should be Parquet actually holds, in words.

    Returns ``"Parquet"`` for a complete Parquet file, else e.g. ``"an empty file"``,
    ``"CSV text (first line 'transaction_id,ts,...')"``, ``"JSON text"``.
    """
    if not payload:
        return "an empty file (0 bytes)"
    if payload[:4] == b"PAR1":
        return "Parquet" if payload[-4:] == b"PAR1" else "a truncated Parquet file"
    head = payload[:4096]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data that is not Parquet (first bytes {payload[:8]!r})"
    stripped = text.lstrip("\ufeff \t\r\n")
    first_line = stripped.splitlines()[0] if stripped else ""
    quoted = first_line if len(first_line) <= 80 else first_line[:77] + "..."
    if stripped.startswith(("{", "[")):
        return f"JSON text (starts {quoted!r})"
    if "," in first_line or ";" in first_line or "\t" in first_line:
        return f"CSV text (first line {quoted!r})"
    return f"text that is not Parquet (first line {quoted!r})"
