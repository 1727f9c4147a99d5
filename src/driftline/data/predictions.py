"""The prediction log: every successful prediction, in the lake, partitioned by day.

Each row holds the keys and time of the transaction, the model inputs as scored, the
score, decision, variant and version that answered, the request's latency and the
answering model's own latency (``model_latency_ms``), whether features fell back, and
for a row routed to a canary that failed, ``canary_failed_version`` and ``canary_error``
(the champion answered it). Drift monitoring, canary analysis and the replay checks read
these rows, all through :func:`read_predictions`. The ``shadow`` version's scores of the
same transactions go to a separate shadow log (``predictions/shadow/dt=D/``), so they
are never mistaken for served rows.

Layout (``{lake}`` is ``settings.lake_uri``: a local folder or any fsspec URI such as
``s3://bucket/lake``)::

    {lake}/predictions/dt=YYYY-MM-DD/<host>-<pid>-<start>-<token>-<seq>.parquet
    {lake}/predictions/shadow/dt=YYYY-MM-DD/<same names>.parquet

The day is the transaction's own time (UTC), so drift analysis of a data interval reads
exactly the transactions of that interval. Each process (a scoring replica) buffers its
rows and writes them as a new, immutable file per flush: once
``prediction_log_flush_rows`` rows are buffered, at least every
``prediction_log_flush_seconds`` (a background thread), and on :meth:`PredictionLog.close`
(the serving app's shutdown, which uvicorn runs on SIGTERM). The writer's name joins the
host name, the process id, its start time and a random token, so two containers whose
processes are both PID 1 never share a name; the sequence number orders one writer's
files. A file is written whole or not at all (:func:`~driftline.core.atomic.put_atomic`:
write aside and rename on a local disk, one upload on an object store), so a reader
never sees half a file, and every row is in exactly one file: a failed write is retried
under the same name, replacing (never adding to) anything a half-failed attempt left.
"""

from __future__ import annotations

import atexit
import io
import logging
import os
import re
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from driftline.core.atomic import filesystem, put_atomic
from driftline.core.fresh import epoch_micros
from driftline.core.settings import Settings

log = logging.getLogger(__name__)

FOLDER = "predictions"
#: Sub-folder of the shadow log: the ``shadow`` version's scores of the same
#: transactions (``predictions/shadow/dt=D/``), never read as served rows.
SHADOW = "shadow"
SUFFIX = ".parquet"
#: Writes a close retries before it gives up on a batch (with a pause between).
CLOSE_ATTEMPTS = 3


def log_root(settings: Settings, *, shadow: bool = False) -> str:
    """URI of the prediction log (or the shadow log) in the lake."""
    root = f"{settings.lake_uri.rstrip('/')}/{FOLDER}"
    return f"{root}/{SHADOW}" if shadow else root


def day_uri(settings: Settings, day: date, *, shadow: bool = False) -> str:
    """URI of the folder holding the prediction (or ``shadow``) rows of ``day``."""
    return f"{log_root(settings, shadow=shadow)}/dt={day.isoformat()}"


def writer_id() -> str:
    """A name no other process has: host, pid, start time (UTC) and a random token."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()) or "host"
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")  # clock-ok: a name, not data
    return f"{host}-{os.getpid()}-{started}-{uuid.uuid4().hex[:8]}"


#: One buffered column: a NumPy array or a list of Python values, one per row.
Values = np.ndarray | list[Any]
#: Arrow's type of the ``ts`` column (kept as int64 microseconds until it is written).
TS_TYPE = pa.timestamp("us", tz="UTC")
_DAY_US = 86_400_000_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def ts_micros(times: Iterable[datetime]) -> np.ndarray:
    """Aware ``times`` as int64 microseconds since the Unix epoch (UTC), exact."""
    return np.fromiter((epoch_micros(t) for t in times), dtype=np.int64)


@dataclass(frozen=True)
class _Chunk:
    """Rows appended together, as columns (``ts``: int64 microseconds, UTC)."""

    columns: dict[str, Values]
    rows: int

    @classmethod
    def of_records(cls, records: Sequence[Mapping[str, Any]]) -> _Chunk:
        """``records`` as columns: the union of their keys, None where a record lacks one."""
        names = dict.fromkeys(key for record in records for key in record)
        columns: dict[str, Values] = {
            name: [record.get(name) for record in records] for name in names
        }
        columns["ts"] = ts_micros(record["ts"] for record in records)
        return cls(columns, len(records))

    @classmethod
    def of_columns(cls, columns: Mapping[str, Values], rows: int) -> _Chunk:
        """``columns`` as they are; each must hold ``rows`` values, ``ts`` in microseconds.

        Raises:
            ValueError: A column of another length, or ``ts`` not int64 microseconds.
        """
        ts = columns.get("ts")
        if not isinstance(ts, np.ndarray) or ts.dtype != np.int64:
            raise ValueError("ts must be an int64 array of microseconds since the epoch")
        for name, values in columns.items():
            if len(values) != rows:
                raise ValueError(f"column {name!r} has {len(values)} values for {rows} rows")
        return cls(dict(columns), rows)

    def days(self) -> np.ndarray:
        """Each row's transaction day (UTC), as days since the epoch."""
        return np.asarray(self.columns["ts"]) // _DAY_US

    def take(self, mask: np.ndarray) -> _Chunk:
        """The rows where ``mask`` is true."""
        index = np.flatnonzero(mask)
        return _Chunk(
            {
                name: values[index]
                if isinstance(values, np.ndarray)
                else [values[i] for i in index.tolist()]
                for name, values in self.columns.items()
            },
            len(index),
        )


def _column(name: str, values: list[Any] | np.ndarray) -> pa.Array:
    """One column as Arrow; a column Arrow cannot type (mixed kinds) is kept as text."""
    if name == "ts":
        return pa.array(np.asarray(values, dtype=np.int64), type=TS_TYPE)
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        log.warning("prediction-log column %r has mixed types; stored as text", name)
        return pa.array([None if v is None else str(v) for v in values], pa.string())


def _joined(parts: list[Values | None], sizes: list[int]) -> Values:
    """One column's values over several chunks (None: the chunk lacks the column).

    Arrays of one kind are concatenated; anything else becomes one list of Python
    values (a missing part is None in its rows).
    """
    arrays = [part for part in parts if isinstance(part, np.ndarray)]
    if len(arrays) == len(parts) and len({a.dtype.kind for a in arrays}) == 1:
        return np.concatenate(arrays)
    joined: list[Any] = []
    for part, size in zip(parts, sizes, strict=True):
        if part is None:
            joined.extend([None] * size)
        else:
            joined.extend(part.tolist() if isinstance(part, np.ndarray) else part)
    return joined


def _table(chunks: Sequence[_Chunk]) -> pa.Table:
    """``chunks`` as one Arrow table; columns are the union of theirs, in first-seen order."""
    names = dict.fromkeys(name for chunk in chunks for name in chunk.columns)
    sizes = [chunk.rows for chunk in chunks]
    return pa.table(
        {
            name: _column(name, _joined([chunk.columns.get(name) for chunk in chunks], sizes))
            for name in names
        }
    )


def _parquet(table: pa.Table) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


@dataclass(frozen=True)
class _Batch:
    """Rows cut from the buffer, named, serialised, not yet (or not surely) written."""

    uri: str
    payload: bytes
    rows: int


class PredictionLog:
    """Thread-safe, buffered writer of prediction records to the lake.

    :meth:`append` only buffers (unless ``flush_rows`` is 1); the file writes happen on
    the background thread, or in :meth:`flush` and :meth:`close`.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        shadow: bool = False,
        flush_rows: int | None = None,
        flush_seconds: float | None = None,
    ) -> None:
        """Write under ``settings.lake_uri`` (the shadow log if ``shadow``).

        Args:
            settings: The lake and the flush bounds.
            shadow: Write the shadow log instead.
            flush_rows: Rows that make a file; ``prediction_log_flush_rows`` by default.
            flush_seconds: Longest pause between flushes while rows wait;
                ``prediction_log_flush_seconds`` by default.

        Nothing is written, and no thread started, until rows arrive.
        """
        self._settings = settings
        self._shadow = shadow
        self._flush_rows = flush_rows or settings.prediction_log_flush_rows
        self._flush_seconds = flush_seconds or settings.prediction_log_flush_seconds
        self._writer = writer_id()
        self._seq = 0
        self._cond = threading.Condition()
        self._chunks: list[_Chunk] = []
        self._buffered = 0
        self._write_lock = threading.Lock()
        self._pending: list[_Batch] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._shadow_log: PredictionLog | None = None
        #: Files and rows written so far (for tests and logs).
        self.files_written = 0
        self.rows_written = 0
        _OPEN.add(self)
        _register_exit_flush()

    @property
    def writer(self) -> str:
        """This writer's unique name (the prefix of its files)."""
        return self._writer

    def shadow_log(self) -> PredictionLog:
        """The shadow log beside this prediction log (closed with it)."""
        if self._shadow_log is None:
            self._shadow_log = PredictionLog(
                self._settings,
                shadow=True,
                flush_rows=self._flush_rows,
                flush_seconds=self._flush_seconds,
            )
        return self._shadow_log

    def append(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Buffer ``records`` (each with an aware ``ts``) for the next flush.

        With ``flush_rows`` 1, after a close, or when the writer has fallen four bounds
        behind, the caller writes them itself before returning.
        """
        rows = list(records)
        if rows:
            self._buffer(_Chunk.of_records(rows))

    def append_columns(self, columns: Mapping[str, Values], rows: int) -> None:
        """Buffer ``rows`` rows given as columns, as :meth:`append` buffers records.

        Each column holds ``rows`` values (a NumPy array or a list); ``ts`` is an int64
        array of microseconds since the epoch, UTC (:func:`ts_micros`). The scorer logs
        a request this way: no dict per row, and one Arrow conversion per column and
        flush instead of per row.

        Raises:
            ValueError: A column of another length, or ``ts`` not int64 microseconds.
        """
        if rows:
            self._buffer(_Chunk.of_columns(columns, rows))

    def _buffer(self, chunk: _Chunk) -> None:
        """Add ``chunk`` to the buffer; wake the writer, or write now (see :meth:`append`)."""
        with self._cond:
            self._chunks.append(chunk)
            self._buffered += chunk.rows
            buffered = self._buffered
            closed = self._closed
            if not closed:
                self._start()
                if buffered >= self._flush_rows:
                    self._cond.notify_all()
        if closed or self._flush_rows == 1 or buffered >= 4 * self._flush_rows:
            self.flush()

    def write(self, records: Iterable[Mapping[str, Any]]) -> None:
        """:meth:`append` the records, then :meth:`flush`: written when this returns."""
        self.append(records)
        self.flush()

    def flush(self) -> None:
        """Write every buffered row now, one new file per day.

        Raises:
            OSError: (or the filesystem's own error) A write failed; its rows stay
                pending and the next flush writes them under the same file name.
        """
        with self._write_lock:
            with self._cond:
                chunks, self._chunks, self._buffered = self._chunks, [], 0
            self._pending.extend(self._cut(chunks))
            while self._pending:
                batch = self._pending[0]
                put_atomic(batch.uri, batch.payload)
                self._pending.pop(0)
                self.files_written += 1
                self.rows_written += batch.rows

    def close(self) -> None:
        """Stop the background thread and write what is buffered (the shadow log too).

        A failing write is retried :data:`CLOSE_ATTEMPTS` times; rows that still cannot
        be written are reported in the log as lost (they are not silently dropped).
        """
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(timeout=30.0)
        for attempt in range(1, CLOSE_ATTEMPTS + 1):
            try:
                self.flush()
                break
            except Exception:
                if attempt == CLOSE_ATTEMPTS:
                    lost = sum(batch.rows for batch in self._pending)
                    log.exception("prediction log %s: %d rows could not be written", self, lost)
                else:
                    time.sleep(0.2 * attempt)
        if self._shadow_log is not None:
            self._shadow_log.close()
        _OPEN.discard(self)

    def __repr__(self) -> str:
        """The log's root and writer name."""
        return f"PredictionLog({log_root(self._settings, shadow=self._shadow)}, {self._writer})"

    def _cut(self, chunks: list[_Chunk]) -> list[_Batch]:
        """Group the rows of ``chunks`` by their transaction day into named, serialised
        batches (a chunk of one day, the usual case, is not copied)."""
        by_day: dict[int, list[_Chunk]] = {}
        for chunk in chunks:
            days = chunk.days()
            first = int(days[0])
            if bool(np.all(days == first)):
                by_day.setdefault(first, []).append(chunk)
                continue
            for day in np.unique(days).tolist():
                by_day.setdefault(int(day), []).append(chunk.take(days == day))
        batches = []
        for day_number, day_chunks in sorted(by_day.items()):
            self._seq += 1
            day = date.fromordinal(_EPOCH_ORDINAL + day_number)
            name = f"{self._writer}-{self._seq:06d}{SUFFIX}"
            uri = f"{day_uri(self._settings, day, shadow=self._shadow)}/{name}"
            rows = sum(chunk.rows for chunk in day_chunks)
            batches.append(_Batch(uri, _parquet(_table(day_chunks)), rows))
        return batches

    def _start(self) -> None:
        """Start the background flusher (the caller holds ``_cond``)."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="prediction-log-flush", daemon=True
            )
            self._thread.start()

    def _run(self) -> None:
        """Flush on the row bound or every ``flush_seconds``, until closed."""
        while True:
            with self._cond:
                if not self._closed and self._buffered < self._flush_rows:
                    self._cond.wait(timeout=self._flush_seconds)
                if self._closed:
                    return  # close() writes the rest
            try:
                self.flush()
            except Exception:  # kept pending; retried on the next round and at close
                log.exception("prediction log %s: write failed, will retry", self)
                with self._cond:
                    self._cond.wait(timeout=self._flush_seconds)


#: Logs not yet closed: flushed at interpreter exit if nobody closed them.
_OPEN: weakref.WeakSet[PredictionLog] = weakref.WeakSet()
_EXIT_REGISTERED = threading.Event()


def _register_exit_flush() -> None:
    """Once per process: flush open logs at interpreter exit (a safety net for close)."""
    if not _EXIT_REGISTERED.is_set():
        _EXIT_REGISTERED.set()
        atexit.register(_close_open_logs)


def _close_open_logs() -> None:
    for prediction_log in list(_OPEN):
        prediction_log.close()


def _day_files(settings: Settings, day: date, *, shadow: bool) -> tuple[Any, list[str]]:
    """The filesystem and the complete log files of ``day`` (sorted: writer, then seq)."""
    fs, folder = filesystem(day_uri(settings, day, shadow=shadow))
    fs.invalidate_cache(folder)  # object stores cache listings; files arrive all the time
    try:
        entries = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return fs, []
    names = (str(entry).rstrip("/") for entry in entries)
    return fs, sorted(
        name
        for name in names
        if name.endswith(SUFFIX) and not name.rsplit("/", 1)[-1].startswith(".")
    )


def read_predictions(settings: Settings, day: date, *, shadow: bool = False) -> pd.DataFrame:
    """Every prediction logged for transactions on ``day`` (all writers); ``ts`` as UTC.

    This is the one reader of the log: rows already flushed by any replica, in file
    order (by writer, then by each writer's sequence). With ``shadow``, the shadow log's
    rows instead (one per transaction the shadow version scored: ``shadow_version``,
    ``shadow_score``, ``shadow_error`` and the served ``model_version``, ``score``,
    ``answered_by``). A missing feature is NaN.

    Returns an empty frame (without columns) when nothing was logged for that day.
    """
    fs, paths = _day_files(settings, day, shadow=shadow)
    if not paths:
        return pd.DataFrame()
    payloads = fs.cat(paths)  # one call: an object store fetches the files concurrently
    frames = [pq.read_table(pa.BufferReader(payloads[path])).to_pandas() for path in paths]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if len(frame):
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
    return frame


def logged_days(
    settings: Settings, *, shadow: bool = False, since: date | None = None
) -> list[date]:
    """Transaction days with rows in the log (or the shadow log), oldest first."""
    fs, root = filesystem(log_root(settings, shadow=shadow))
    fs.invalidate_cache(root)
    try:
        entries = fs.ls(root, detail=False)
    except FileNotFoundError:
        return []
    days = []
    for entry in entries:
        name = str(entry).rstrip("/").rsplit("/", 1)[-1]
        if not name.startswith("dt="):
            continue
        day = date.fromisoformat(name.removeprefix("dt="))
        if (since is None or day >= since) and _day_files(settings, day, shadow=shadow)[1]:
            days.append(day)
    return sorted(days)
