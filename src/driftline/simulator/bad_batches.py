"""Bad batches: deliberately broken landing files for validation to catch.

A :class:`BadBatch` names a defect, a day and a dataset; :func:`apply_bad_batch`
corrupts that day's clean table accordingly (deterministically per seed and day), and
:func:`landing_bytes` encodes the file of the defects that are about the file itself
(``csv_as_parquet``: the rows as CSV text under the ``.parquet`` name).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Literal, get_args

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from driftline.core import schemas
from driftline.simulator.columns import timestamps
from driftline.simulator.units import DAY_US, BoolArray, FloatArray

log = logging.getLogger(__name__)

BadBatchKind = Literal[
    "missing_column",
    "wrong_type",
    "null_keys",
    "negative_amount",
    "absurd_amount",
    "duplicate_ids",
    "empty_file",
    "ts_outside_interval",
    "unknown_currency",
    "nan_amount",
    "inf_amount",
    "unknown_transactions",
    "csv_as_parquet",
]
LandingDataset = Literal["transactions", "labels"]

#: Bad-batch kinds that make sense for the labels dataset (it has no amount/currency).
LABEL_BAD_BATCH_KINDS: frozenset[str] = frozenset(
    {
        "missing_column",
        "wrong_type",
        "null_keys",
        "duplicate_ids",
        "empty_file",
        "ts_outside_interval",
        "unknown_transactions",
        "csv_as_parquet",
    }
)
#: Bad-batch kinds that only make sense for the labels dataset.
LABEL_ONLY_BAD_BATCH_KINDS: frozenset[str] = frozenset({"unknown_transactions"})
#: Chargebacks added by ``unknown_transactions``.
UNKNOWN_TRANSACTIONS = 30

_BAD_BATCH_STREAM = 0xBAD


@dataclass(frozen=True)
class BadBatch:
    """A deliberately broken landing file of one dataset on one day.

    Attributes:
        kind: The defect; see :data:`BadBatchKind`. ``negative_amount``,
            ``absurd_amount``, ``unknown_currency``, ``nan_amount`` and ``inf_amount``
            only apply to transactions, ``unknown_transactions`` only to labels.
        day: Day whose landing file is broken.
        dataset: ``transactions`` or ``labels``.
    """

    kind: BadBatchKind
    day: date
    dataset: LandingDataset = "transactions"

    def __post_init__(self) -> None:
        if self.kind not in get_args(BadBatchKind):
            raise ValueError(f"unknown bad batch kind {self.kind!r}")
        if self.dataset not in get_args(LandingDataset):
            raise ValueError(f"unknown landing dataset {self.dataset!r}")
        if self.dataset == "labels" and self.kind not in LABEL_BAD_BATCH_KINDS:
            raise ValueError(f"bad batch kind {self.kind!r} does not apply to labels")
        if self.dataset == "transactions" and self.kind in LABEL_ONLY_BAD_BATCH_KINDS:
            raise ValueError(f"bad batch kind {self.kind!r} only applies to labels")


_MISSING_COLUMN = {"transactions": "amount", "labels": "is_fraud"}
_EVENT_TIME = schemas.EVENT_TIME_COLUMN


def _defect_rows(rng: np.random.Generator, n: int, share: float) -> BoolArray:
    """About ``share`` of ``n`` rows (at least one when there are rows)."""
    mask = rng.random(n) < share
    if n and not mask.any():
        mask[int(rng.integers(0, n))] = True
    return mask


def _set_column(table: pa.Table, name: str, values: pa.Array, nullable: bool = False) -> pa.Table:
    """Replace column ``name`` (keeping its position), possibly with a new type."""
    index = table.schema.get_field_index(name)
    old = table.schema.field(index)
    new_field = pa.field(name, values.type, nullable=old.nullable or nullable)
    return table.set_column(index, new_field, values)


def _with_nulls(table: pa.Table, name: str, mask: BoolArray) -> pa.Table:
    """Column ``name`` nulled where ``mask`` holds (the field becomes nullable)."""
    column = table.column(name).combine_chunks()
    values = pc.if_else(pa.array(mask), pa.scalar(None, column.type), column)
    return _set_column(table, name, values, nullable=True)


def _edit_float(
    table: pa.Table, name: str, mask: BoolArray, edit: Callable[[FloatArray], FloatArray]
) -> pa.Table:
    """Apply ``edit`` to the masked values of float column ``name``."""
    values = table.column(name).to_numpy().astype(np.float64)
    values[mask] = edit(values[mask])
    return _set_column(table, name, pa.array(values, type=pa.float64()))


def _wrong_type(table: pa.Table, dataset: str) -> pa.Table:
    """Amounts as strings like ``"12.50 EUR"`` (labels: ``is_fraud`` as ``"yes"``)."""
    if dataset == "labels":
        return _set_column(table, "is_fraud", pa.array(["yes"] * table.num_rows, pa.string()))
    amounts = table.column("amount").to_pylist()
    currencies = table.column("currency").to_pylist()
    text = [f"{a:.2f} {c}" for a, c in zip(amounts, currencies, strict=True)]
    return _set_column(table, "amount", pa.array(text, type=pa.string()))


def _duplicate_ids(table: pa.Table, rng: np.random.Generator, dataset: str) -> pa.Table:
    """Re-deliver ~2% of the rows (same ``transaction_id``), keeping the sort order."""
    repeat = np.flatnonzero(_defect_rows(rng, table.num_rows, 0.02))
    doubled = pa.concat_tables([table, table.take(pa.array(repeat, type=pa.int64()))])
    return doubled.sort_by([(_EVENT_TIME[dataset], "ascending"), ("transaction_id", "ascending")])


def _shift_times(table: pa.Table, rng: np.random.Generator, dataset: str) -> pa.Table:
    """Move ~3% of the event times to the previous or next day."""
    name = _EVENT_TIME[dataset]
    mask = _defect_rows(rng, table.num_rows, 0.03)
    values = table.column(name).cast(pa.int64()).to_numpy().copy()
    values[mask] += np.where(rng.random(int(mask.sum())) < 0.5, -DAY_US, DAY_US)
    return _set_column(table, name, timestamps(values))


def _unknown_currency(table: pa.Table, rng: np.random.Generator) -> pa.Table:
    """Set ~2% of the currencies to ``"XXX"``."""
    mask = _defect_rows(rng, table.num_rows, 0.02)
    values = pc.if_else(pa.array(mask), pa.scalar("XXX"), table.column("currency"))
    return _set_column(table, "currency", values.combine_chunks())


def _unknown_transactions(table: pa.Table, rng: np.random.Generator, day: date) -> pa.Table:
    """Add :data:`UNKNOWN_TRANSACTIONS` fraud reports for transactions that never existed.

    They copy the merchants, users and times of real chargebacks of the day (so they
    would inflate those merchants' risk) under transaction ids no transaction has.
    """
    if table.num_rows == 0:
        return table
    picks = rng.integers(0, table.num_rows, UNKNOWN_TRANSACTIONS)
    fakes = table.take(pa.array(picks, type=pa.int64()))
    ids = [f"unknown-{day:%Y%m%d}-{i:04d}" for i in range(UNKNOWN_TRANSACTIONS)]
    fakes = _set_column(fakes, "transaction_id", pa.array(ids, pa.string()))
    fakes = _set_column(fakes, "is_fraud", pa.array([1] * UNKNOWN_TRANSACTIONS, pa.int64()))
    both = pa.concat_tables([table, fakes.cast(table.schema)])
    return both.sort_by([("label_ts", "ascending"), ("transaction_id", "ascending")])


def landing_bytes(table: pa.Table, applied: tuple[BadBatch, ...]) -> bytes | None:
    """The landing file's bytes when a defect is about the file itself, else ``None``."""
    if any(bad.kind == "csv_as_parquet" for bad in applied):
        import pyarrow.csv as pacsv

        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        return bytes(sink.getvalue().to_pybytes())
    return None


def apply_bad_batch(table: pa.Table, bad: BadBatch, seed: int) -> pa.Table:
    """Corrupt a clean landing ``table`` as ``bad`` describes (deterministic per seed/day).

    Args:
        table: The clean table of ``bad.dataset`` on ``bad.day``.
        bad: The defect.
        seed: Simulator seed.

    Returns:
        The broken table. A defect whose column is already gone (e.g. after
        ``missing_column``) leaves the table unchanged.
    """
    kind_index = get_args(BadBatchKind).index(bad.kind)
    rng = np.random.default_rng([seed, bad.day.toordinal(), _BAD_BATCH_STREAM, kind_index])
    needed = {
        "missing_column": _MISSING_COLUMN[bad.dataset],
        "wrong_type": _MISSING_COLUMN[bad.dataset],
        "negative_amount": "amount",
        "absurd_amount": "amount",
        "unknown_currency": "currency",
        "nan_amount": "amount",
        "inf_amount": "amount",
    }.get(bad.kind)
    if needed is not None and needed not in table.column_names:
        log.warning("bad batch %s skipped: column %s is missing", bad, needed)
        return table
    n = table.num_rows
    if bad.kind == "missing_column":
        return table.drop_columns([_MISSING_COLUMN[bad.dataset]])
    if bad.kind == "wrong_type":
        return _wrong_type(table, bad.dataset)
    if bad.kind == "null_keys":
        nulled = _with_nulls(table, "transaction_id", _defect_rows(rng, n, 0.05))
        return _with_nulls(nulled, "user_id", _defect_rows(rng, n, 0.05))
    if bad.kind == "negative_amount":
        return _edit_float(table, "amount", _defect_rows(rng, n, 0.02), lambda a: -np.abs(a) - 1)
    if bad.kind == "absurd_amount":
        return _edit_float(
            table, "amount", _defect_rows(rng, n, 0.01), lambda a: np.full_like(a, 1e9)
        )
    if bad.kind == "duplicate_ids":
        return _duplicate_ids(table, rng, bad.dataset)
    if bad.kind == "empty_file":
        return table.slice(0, 0)
    if bad.kind == "ts_outside_interval":
        return _shift_times(table, rng, bad.dataset)
    if bad.kind == "nan_amount":
        return _edit_float(table, "amount", _defect_rows(rng, n, 0.01), lambda a: a * np.nan)
    if bad.kind == "inf_amount":
        return _edit_float(
            table,
            "amount",
            _defect_rows(rng, n, 0.01),
            lambda a: np.where(np.arange(a.size) % 2 == 0, np.inf, -np.inf),
        )
    if bad.kind == "unknown_transactions":
        return _unknown_transactions(table, rng, bad.day)
    if bad.kind == "csv_as_parquet":
        return table  # the rows are fine; landing_bytes writes them as CSV
    return _unknown_currency(table, rng)
