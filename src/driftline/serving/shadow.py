"""Shadow scoring: the ``shadow`` version scores a copy of the traffic, off the request path.

After a request has its answer, :meth:`ShadowScorer.offer` puts a copy of its
model-input columns (plus what was served) on a bounded queue, without blocking: when
the queue is full the copy is dropped and counted. A single background thread takes
whatever is queued, scores it with the shadow model in one forward pass and appends one
row per transaction to the shadow log (``{lake}/predictions/shadow/dt=D/``, see
:mod:`driftline.data.predictions`): ``transaction_id``, ``ts``, ``shadow_version``,
``shadow_score``, ``shadow_decision``, the served ``model_version``, ``score`` and
``answered_by``, and ``shadow_error`` when the shadow failed. A slow or failing shadow
therefore never delays or changes an answer: the request only pays for the enqueue.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from driftline.data.predictions import PredictionLog
from driftline.serving.batching import Scorable, concat_columns
from driftline.serving.schemas import Score, Transaction
from driftline.training.lean import Columns

log = logging.getLogger(__name__)

#: Most queued requests merged into one shadow forward pass.
SHADOW_BATCH = 64


@dataclass(frozen=True)
class ShadowJob:
    """One request's copy for the shadow model."""

    version: str
    model: Scorable
    transactions: Sequence[Transaction]
    columns: Columns
    served: Sequence[Score]


class ShadowScorer:
    """A bounded queue and one worker thread scoring jobs with their shadow model."""

    def __init__(self, predictions: PredictionLog, *, queue_size: int, threshold: float) -> None:
        """Log to ``predictions`` (the shadow log); hold at most ``queue_size`` jobs."""
        self._log = predictions
        self._threshold = threshold
        self._queue: queue.Queue[ShadowJob | None] = queue.Queue(maxsize=queue_size)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        #: Counts read by the metrics: scored rows, dropped requests, failed passes.
        self.scored = 0
        self.dropped = 0
        self.errors = 0

    def offer(self, job: ShadowJob) -> bool:
        """Queue ``job`` without blocking; ``False`` (and counted) when the queue is full."""
        self._start()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            with self._lock:  # request threads drop concurrently
                self.dropped += 1
            return False
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Let the worker finish what is queued (up to ``timeout``), then stop it."""
        thread = self._thread
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(None, timeout=timeout)
        thread.join(timeout)
        self._thread = None

    def drain(self, timeout: float = 10.0) -> None:
        """Wait until every queued job has been scored and logged (for tests and shutdown)."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)

    def _start(self) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._work, name="shadow-scorer", daemon=True
                    )
                    self._thread.start()

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                return
            jobs = [first]
            stop = False
            while len(jobs) < SHADOW_BATCH:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                jobs.append(nxt)
            try:
                self._score(jobs)
            except Exception:  # the shadow must never take anything else down
                log.exception("shadow logging failed")
            finally:
                for _ in range(len(jobs) + stop):
                    self._queue.task_done()
            if stop:
                return

    def _score(self, jobs: list[ShadowJob]) -> None:
        """Score the jobs (grouped by model) and log one line per transaction."""
        records: list[dict[str, Any]] = []
        for model in {id(job.model): job.model for job in jobs}.values():
            group = [job for job in jobs if job.model is model]
            started = time.perf_counter()
            error = None
            try:
                scores = model.predict_columns(concat_columns([job.columns for job in group]))
            except Exception as failure:
                self.errors += 1
                error = f"{type(failure).__name__}: {failure}"[:200]
                log.warning("shadow version %s failed: %s", group[0].version, error)
                scores = None
            elapsed_ms = (time.perf_counter() - started) * 1000.0
            position = 0
            for job in group:
                for txn, served in zip(job.transactions, job.served, strict=True):
                    value = None if scores is None else float(scores[position])
                    position += 1
                    records.append(self._record(job, txn, served, value, error, elapsed_ms))
        self._log.append(records)
        self.scored += sum(r["shadow_score"] is not None for r in records)

    def _record(
        self,
        job: ShadowJob,
        txn: Transaction,
        served: Score,
        value: float | None,
        error: str | None,
        elapsed_ms: float,
    ) -> dict[str, Any]:
        decision = None
        if value is not None:
            decision = "decline" if value >= self._threshold else "approve"
        return {
            "transaction_id": txn.transaction_id,
            "ts": txn.ts.astimezone(UTC),
            "shadow_version": job.version,
            "shadow_score": value,
            "shadow_decision": decision,
            "shadow_latency_ms": round(elapsed_ms, 3),
            "shadow_error": error,
            "model_version": served.model_version,
            "answered_by": served.answered_by,
            "score": served.score,
            "decision": served.decision,
        }
