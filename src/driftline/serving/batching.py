"""Micro-batching: concurrent requests on one model share one forward pass.

The scoring routes are plain ``def`` functions on FastAPI's thread pool, so concurrent
single-transaction requests each arrive on their own thread. A :class:`MicroBatcher`
(one per variant) merges their rows:

* a request *announces* itself when it starts (before its feature lookup) and submits
  its model-input columns once it has them;
* when nothing else is running or announced, the rows are scored at once on the
  calling thread (no hand-off, no wait: one request in flight pays nothing);
* otherwise they are queued; a worker thread takes the queue as soon as every
  announced request has submitted or ``window_seconds`` after the oldest queued row,
  whichever comes first (at most ``max_rows`` rows), scores each model's rows in one
  forward pass and hands every request its own scores (or the error).

A batch only ever holds rows of one model object, so a model swap mid-window never
scores a row with a model its request did not snapshot.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from driftline.training.lean import Columns


class Scorable(Protocol):
    """A loaded model as serving calls it (a lean model, or an adapted pyfunc)."""

    def predict_columns(self, columns: Columns) -> np.ndarray:
        """Fraud probability per row of ``columns`` (float64 ``[n]``)."""
        ...


def concat_columns(parts: Sequence[Columns]) -> dict[str, Any]:
    """The rows of several column sets, in order (arrays concatenated, lists joined)."""
    if len(parts) == 1:
        return dict(parts[0])
    merged: dict[str, Any] = {}
    for name, first in parts[0].items():
        if isinstance(first, np.ndarray):
            merged[name] = np.concatenate([part[name] for part in parts])
        else:
            merged[name] = [value for part in parts for value in part[name]]
    return merged


@dataclass(eq=False)
class _Pending:
    """One request's rows waiting for a batch."""

    model: Scorable
    columns: Columns
    rows: int
    arrived: float
    done: threading.Event = field(default_factory=threading.Event)
    scores: np.ndarray | None = None
    error: BaseException | None = None


class MicroBatcher:
    """Merges concurrent :meth:`predict` calls into one forward pass per model."""

    def __init__(self, name: str, *, window_seconds: float, max_rows: int) -> None:
        """A batcher for one variant; ``window_seconds <= 0`` turns merging off."""
        self.name = name
        self._window = window_seconds
        self._max_rows = max_rows
        self._cond = threading.Condition()
        self._pending: list[_Pending] = []
        self._announced = 0
        self._running = 0
        self._closed = False
        self._worker: threading.Thread | None = None
        #: Forward passes run and rows scored (merged passes hold more than one request).
        self.passes = 0
        self.merged_requests = 0

    def announce(self) -> None:
        """A request for this variant started; its rows will follow (or :meth:`withdraw`)."""
        with self._cond:
            self._announced += 1

    def withdraw(self) -> None:
        """An announced request will submit nothing (it failed or went elsewhere)."""
        with self._cond:
            self._announced = max(0, self._announced - 1)
            self._cond.notify_all()

    def predict(self, model: Scorable, columns: Columns, rows: int) -> np.ndarray:
        """Scores of ``columns`` by ``model``, merged with concurrent calls when any.

        The caller must have :meth:`announce`\\ d itself; this call consumes it.

        Raises:
            Exception: Whatever the model raised on the batch holding these rows.
        """
        with self._cond:
            self._announced = max(0, self._announced - 1)
            alone = not self._pending and not self._running and not self._announced
            if alone or self._window <= 0 or rows >= self._max_rows or self._closed:
                self._running += 1
                item = None
            else:
                item = _Pending(model, columns, rows, time.monotonic())
                self._pending.append(item)
                self._start_worker()
                self._cond.notify_all()
        if item is None:
            try:
                return self._run_alone(model, columns)
            finally:
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()
        item.done.wait()
        if item.error is not None:
            raise item.error
        assert item.scores is not None
        return item.scores

    def _run_alone(self, model: Scorable, columns: Columns) -> np.ndarray:
        with self._cond:  # counters are read by the metrics: keep them exact
            self.passes += 1
        return np.asarray(model.predict_columns(columns), dtype=np.float64).reshape(-1)

    def close(self) -> None:
        """Stop the worker once the queue is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._worker is not None:
            self._worker.join(timeout=5.0)

    def _start_worker(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(
                target=self._work, name=f"batcher-{self.name}", daemon=True
            )
            self._worker.start()

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._score(batch)

    def _next_batch(self) -> list[_Pending] | None:
        """Wait for rows, then for announced requests (up to the window); take a batch."""
        with self._cond:
            while not self._pending:
                if self._closed:
                    return None
                self._cond.wait()
            deadline = self._pending[0].arrived + self._window
            while (
                self._announced > 0
                and sum(p.rows for p in self._pending) < self._max_rows
                and (remaining := deadline - time.monotonic()) > 0
            ):
                self._cond.wait(remaining)
            model = self._pending[0].model
            batch: list[_Pending] = []
            rows = 0
            for item in self._pending:
                if item.model is model and (not batch or rows + item.rows <= self._max_rows):
                    batch.append(item)
                    rows += item.rows
            self._pending = [p for p in self._pending if p not in batch]
            self._running += 1
            return batch

    def _score(self, batch: list[_Pending]) -> None:
        """One forward pass for ``batch``; every request gets its slice or the error."""
        try:
            merged = concat_columns([item.columns for item in batch])
            scores = self._run_alone(batch[0].model, merged)
            if len(batch) > 1:
                with self._cond:
                    self.merged_requests += len(batch)
            start = 0
            for item in batch:
                item.scores = scores[start : start + item.rows]
                start += item.rows
        except BaseException as error:  # every waiting request must learn of it
            for item in batch:
                item.error = error
        finally:
            with self._cond:
                self._running -= 1
                self._cond.notify_all()
            for item in batch:
                item.done.set()
