"""The transactions table and the ground truth of one day."""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from driftline.core import schemas
from driftline.simulator.columns import timestamps, transaction_ids
from driftline.simulator.config import SimulatorConfig
from driftline.simulator.days import day_rows
from driftline.simulator.population import Population, population_of
from driftline.simulator.rows import FRAUD_TYPES, LEGIT, Rows
from driftline.simulator.units import IntArray, day_start_us

_EURO_COUNTRIES = frozenset({"DE", "FR", "NL", "ES", "IT"})
_OTHER_CURRENCY = {"GB": "GBP", "US": "USD", "CH": "CHF", "SE": "SEK", "PL": "PLN"}
#: Currency index (into ``schemas.CURRENCIES``) of each country in ``schemas.COUNTRIES``.
_COUNTRY_CURRENCY = np.array(
    [
        schemas.CURRENCIES.index(
            "EUR" if country in _EURO_COUNTRIES else _OTHER_CURRENCY.get(country, "USD")
        )
        for country in schemas.COUNTRIES
    ]
)


def _lookup(names: tuple[str, ...], codes: IntArray) -> pa.Array:
    """Strings ``names[codes[i]]``."""
    return pc.take(pa.array(names, type=pa.string()), pa.array(codes, type=pa.int64()))


def _device_ids(rows: Rows) -> pa.Array:
    """``d{n}`` for the users' known devices, ``x{n}`` for never-seen fraud devices."""
    prefix = _lookup(("d", "x"), rows.new_device.astype(np.int64))
    number = pa.array(rows.device, type=pa.int64()).cast(pa.string())
    return pc.binary_join_element_wise(prefix, number, "")


def _transactions_table(pop: Population, day: date, rows: Rows) -> pa.Table:
    """The canonical transactions table of ``day``."""
    n = len(rows.ts)
    country = pop.merchant_country[rows.merchant]
    columns = {
        "transaction_id": transaction_ids(day, np.arange(n, dtype=np.int64)),
        "ts": timestamps(rows.ts + day_start_us(day)),
        "user_id": pa.array(rows.user + 1, type=pa.int64()),
        "card_id": pa.array(rows.card, type=pa.int64()),
        "merchant_id": pa.array(rows.merchant + 1, type=pa.int64()),
        "merchant_category": _lookup(
            schemas.MERCHANT_CATEGORIES, pop.merchant_category[rows.merchant]
        ),
        "merchant_country": _lookup(schemas.COUNTRIES, country),
        "amount": pa.array(rows.amount, type=pa.float64()),
        "currency": _lookup(schemas.CURRENCIES, _COUNTRY_CURRENCY[country]),
        "channel": _lookup(schemas.CHANNELS, pop.merchant_online[rows.merchant].astype(np.int64)),
        "device_id": _device_ids(rows),
    }
    return pa.Table.from_arrays(list(columns.values()), schema=schemas.TRANSACTIONS)


#: Schema of the simulator's ground truth (``simulator_truth``).
TRUTH = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("is_fraud", pa.int64(), nullable=False),
        pa.field("fraud_type", pa.string(), nullable=False),
    ]
)


def _truth_table(day: date, rows: Rows) -> pa.Table:
    """Ground truth of ``day`` (same row order as the transactions)."""
    ids = transaction_ids(day, np.arange(len(rows.ts), dtype=np.int64))
    is_fraud = pa.array((rows.fraud != LEGIT).astype(np.int64), type=pa.int64())
    return pa.Table.from_arrays([ids, is_fraud, _lookup(FRAUD_TYPES, rows.fraud)], schema=TRUTH)


def simulate_transactions(config: SimulatorConfig, day: date) -> tuple[pa.Table, pa.Table]:
    """Generate one day of transactions.

    Args:
        config: Simulator configuration.
        day: The day (not before ``config.anchor``).

    Returns:
        ``(transactions, truth)``: transactions matching :data:`schemas.TRANSACTIONS`
        sorted by ``ts`` then ``transaction_id``, and the ground truth
        (``transaction_id``, ``is_fraud``, ``fraud_type`` with ``""`` for legit) in the
        same order.
    """
    rows = day_rows(config, day)
    pop = population_of(config)
    return _transactions_table(pop, day, rows), _truth_table(day, rows)
