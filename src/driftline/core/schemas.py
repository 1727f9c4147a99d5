"""Canonical schemas of the datasets that flow through the lake.

Landing files may deviate from these (that is what validation is for); raw and
feature partitions always match them exactly.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

#: One card transaction as delivered by the upstream payment system.
TRANSACTIONS = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("ts", TIMESTAMP, nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("card_id", pa.int64(), nullable=False),
        pa.field("merchant_id", pa.int64(), nullable=False),
        pa.field("merchant_category", pa.string()),
        pa.field("merchant_country", pa.string()),
        pa.field("amount", pa.float64()),
        pa.field("currency", pa.string()),
        pa.field("channel", pa.string()),
        pa.field("device_id", pa.string()),
    ]
)

#: A chargeback (fraud report) that arrives days after its transaction.
LABELS = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("merchant_id", pa.int64(), nullable=False),
        pa.field("transaction_ts", TIMESTAMP, nullable=False),
        pa.field("label_ts", TIMESTAMP, nullable=False),
        pa.field("is_fraud", pa.int64(), nullable=False),
    ]
)

#: Partitioning column (event time) of each landing/raw dataset.
EVENT_TIME_COLUMN = {"transactions": "ts", "labels": "label_ts"}

SCHEMAS = {"transactions": TRANSACTIONS, "labels": LABELS}

CURRENCIES = ("EUR", "USD", "GBP", "CHF", "SEK", "PLN")
CHANNELS = ("pos", "online")
MERCHANT_CATEGORIES = (
    "grocery",
    "restaurant",
    "fuel",
    "travel",
    "electronics",
    "fashion",
    "digital_goods",
    "gaming",
    "pharmacy",
    "utilities",
)
COUNTRIES = ("DE", "FR", "NL", "ES", "IT", "GB", "US", "PL", "SE", "CH", "NG", "BR", "RU", "CN")
