"""The prediction log: one JSON line per successful prediction, partitioned by day.

Each line holds the keys and time of the transaction, the model inputs as scored, the
score, decision, variant and version that answered, the request's latency and the
answering model's own latency (``model_latency_ms``), whether features fell back, and
for a row routed to a canary that failed, ``canary_failed_version`` and ``canary_error``
(the champion answered it). Drift monitoring and canary analysis read these lines.
The ``shadow`` version's scores of the same transactions go to a separate shadow log
(``predictions/shadow/dt=D/``), so they are never mistaken for served rows.

Lines go to ``{home}/predictions/dt=YYYY-MM-DD/<pid>.jsonl`` where the day is the
transaction's own time (UTC), so drift analysis of a data interval reads exactly the
transactions of that interval. One file per process means replicas never interleave
writes; within a process a lock serialises appends, and each request's lines are
flushed before it answers.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from driftline.core.settings import Settings

FOLDER = "predictions"
#: Sub-folder of the shadow log: the ``shadow`` version's scores of the same
#: transactions (``predictions/shadow/dt=D/<pid>.jsonl``), never read as served rows.
SHADOW = "shadow"


def day_folder(settings: Settings, day: date, *, shadow: bool = False) -> Path:
    """Folder holding the prediction (or ``shadow``) lines of transactions on ``day``."""
    root = settings.home / FOLDER / SHADOW if shadow else settings.home / FOLDER
    return root / f"dt={day.isoformat()}"


def _json_value(value: Any) -> Any:
    """NaN (a missing feature) as JSON null, times as ISO 8601."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, datetime):
        return value.isoformat()
    return value


class PredictionLog:
    """Thread-safe appender of prediction records."""

    def __init__(self, settings: Settings, *, shadow: bool = False) -> None:
        """Write under ``settings.home`` (the shadow log if ``shadow``); nothing until used."""
        self._settings = settings
        self._shadow = shadow
        self._lock = threading.Lock()
        self._name = f"{os.getpid()}.jsonl"

    def shadow_log(self) -> PredictionLog:
        """The shadow log beside this prediction log."""
        return PredictionLog(self._settings, shadow=True)

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Append ``records`` (each with an aware ``ts``) and flush them."""
        by_day: dict[date, list[str]] = {}
        for record in records:
            line = json.dumps({k: _json_value(v) for k, v in record.items()}, allow_nan=False)
            by_day.setdefault(record["ts"].astimezone(UTC).date(), []).append(line + "\n")
        with self._lock:
            for day, lines in by_day.items():
                folder = day_folder(self._settings, day, shadow=self._shadow)
                folder.mkdir(parents=True, exist_ok=True)
                with open(folder / self._name, "a", encoding="utf-8") as handle:
                    handle.writelines(lines)
                    handle.flush()


def read_predictions(settings: Settings, day: date, *, shadow: bool = False) -> pd.DataFrame:
    """Every prediction logged for transactions on ``day`` (all processes); ``ts`` as UTC.

    With ``shadow``, the shadow log's lines instead (one per transaction the shadow
    version scored: ``shadow_version``, ``shadow_score``, ``shadow_error`` and the
    served ``model_version``, ``score``, ``answered_by``).
    Returns an empty frame when nothing was logged for that day.
    """
    files = sorted(day_folder(settings, day, shadow=shadow).glob("*.jsonl"))
    records = [
        json.loads(line)
        for path in files
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
    frame = pd.DataFrame.from_records(records)
    if len(frame):
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True, format="ISO8601")
    return frame
