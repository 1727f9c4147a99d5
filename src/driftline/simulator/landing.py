"""Landing files: one day of transactions, the chargebacks reported that day and the
ground truth, written into the lake's landing zone::

    {lake_uri}/landing/{dataset}/dt=YYYY-MM-DD/{dataset}.parquet
    {lake_uri}/simulator_truth/dt=YYYY-MM-DD/truth.parquet

Configured bad batches corrupt the matching landing file (never the truth).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import IO

import pyarrow as pa
import pyarrow.compute as pc

from driftline.core import lake
from driftline.core.atomic import write_atomic
from driftline.core.interval import Interval
from driftline.simulator.bad_batches import BadBatch, apply_bad_batch, landing_bytes
from driftline.simulator.config import SimulatorConfig
from driftline.simulator.labels import simulate_labels
from driftline.simulator.transactions import simulate_transactions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DayResult:
    """What :func:`write_landing` wrote for one day."""

    day: date
    transactions_path: str
    labels_path: str
    truth_path: str
    transaction_rows: int
    label_rows: int
    fraud_rows: int
    bad_batches: tuple[BadBatch, ...]


@dataclass(frozen=True)
class SimulationResult:
    """What :func:`write_landing` wrote, day by day."""

    days: tuple[DayResult, ...]

    @property
    def transaction_rows(self) -> int:
        """Transactions written over all days (as landed, bad batches included)."""
        return sum(d.transaction_rows for d in self.days)

    @property
    def label_rows(self) -> int:
        """Chargebacks written over all days (as landed)."""
        return sum(d.label_rows for d in self.days)

    @property
    def fraud_rows(self) -> int:
        """Fraudulent transactions generated over all days (ground truth)."""
        return sum(d.fraud_rows for d in self.days)

    @property
    def paths(self) -> tuple[str, ...]:
        """Every file written."""
        return tuple(
            p for d in self.days for p in (d.transactions_path, d.labels_path, d.truth_path)
        )


def landing_path(lake_uri: str, dataset: str, day: date) -> str:
    """URI of the landing file of ``dataset`` on ``day`` (the lake's landing layout)."""
    return lake.landing_file(lake_uri, dataset, day)


def truth_path(lake_uri: str, day: date) -> str:
    """URI of the simulator's ground truth of ``day``."""
    return f"{lake_uri.rstrip('/')}/simulator_truth/dt={day:%Y-%m-%d}/truth.parquet"


def write_parquet(uri: str, table: pa.Table) -> None:
    """Write ``table`` to ``uri`` atomically with fixed options (see :func:`lake.write_file`)."""
    lake.write_file(uri, table)


def _writer(payload: bytes) -> Callable[[IO[bytes]], None]:
    """A :func:`write_atomic` callback writing ``payload`` as it is."""

    def write(handle: IO[bytes]) -> None:
        handle.write(payload)

    return write


def _broken(
    config: SimulatorConfig, table: pa.Table, dataset: str, day: date
) -> tuple[pa.Table, tuple[BadBatch, ...]]:
    """Apply the bad batches of ``dataset`` on ``day`` to ``table``."""
    applied = tuple(b for b in config.bad_batches if b.day == day and b.dataset == dataset)
    for bad in applied:
        table = apply_bad_batch(table, bad, config.seed)
        log.info("applied bad batch %s to %s on %s", bad.kind, dataset, day)
    return table, applied


def _write_day(config: SimulatorConfig, lake_uri: str, day: date) -> DayResult:
    """Write transactions, labels and truth of one day."""
    transactions, truth = simulate_transactions(config, day)
    labels = simulate_labels(config, day)
    fraud_rows = int(pc.sum(truth.column("is_fraud")).as_py() or 0)
    transactions, bad_tx = _broken(config, transactions, "transactions", day)
    labels, bad_labels = _broken(config, labels, "labels", day)
    paths = (
        landing_path(lake_uri, "transactions", day),
        landing_path(lake_uri, "labels", day),
        truth_path(lake_uri, day),
    )
    files = ((transactions, bad_tx), (labels, bad_labels), (truth, ()))
    for path, (table, applied) in zip(paths, files, strict=True):
        payload = landing_bytes(table, applied)
        if payload is None:
            write_parquet(path, table)
        else:
            write_atomic(path, _writer(payload))
    log.info(
        "simulated %s: %d transactions (%d fraud), %d chargebacks",
        day,
        transactions.num_rows,
        fraud_rows,
        labels.num_rows,
    )
    return DayResult(
        day, *paths, transactions.num_rows, labels.num_rows, fraud_rows, bad_tx + bad_labels
    )


def write_landing(
    config: SimulatorConfig,
    interval: Interval,
    lake_uri: str,
    progress: Callable[[date], None] | None = None,
) -> SimulationResult:
    """Write the landing files and ground truth of every day of ``interval``.

    Each day gets ``landing/transactions``, ``landing/labels`` (chargebacks reported
    that day) and ``simulator_truth``; configured bad batches corrupt the matching
    landing file. Rerunning rewrites identical bytes.

    Args:
        config: Simulator configuration.
        interval: Days to write (none before ``config.anchor``).
        lake_uri: Root of the lake (local path or fsspec URI).
        progress: Called with each day once it is written.

    Returns:
        Row counts and paths per day.
    """
    results = []
    for day in interval.days():
        results.append(_write_day(config, lake_uri, day))
        if progress is not None:
            progress(day)
    return SimulationResult(tuple(results))
