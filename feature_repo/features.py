"""Feast definitions for driftline's fraud features (declarative only).

Both feature views read the per-transaction feature table that the Spark job
writes (``{lake}/features/transaction_features/dt=YYYY-MM-DD/``); each view keeps
the columns that describe its entity. The lake location is deployment
configuration: driftline points the source at ``Settings.lake_uri`` when it applies
these definitions, and the path below is only what the ``feast`` CLI sees.
"""

from datetime import timedelta

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

from driftline.core.settings import get_settings

user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.INT64,
    description="A cardholder.",
)
merchant = Entity(
    name="merchant",
    join_keys=["merchant_id"],
    value_type=ValueType.INT64,
    description="A card acceptor.",
)

transaction_features_source = FileSource(
    name="transaction_features",
    path=f"{get_settings().lake_uri}/features/transaction_features",
    timestamp_field="event_timestamp",
    description="Per-transaction windowed features written by the Spark feature job.",
)

user_activity = FeatureView(
    name="user_activity",
    entities=[user],
    ttl=timedelta(days=7),
    schema=[
        Field(name="user_txn_count_1h", dtype=Int64),
        Field(name="user_txn_count_24h", dtype=Int64),
        Field(name="user_txn_count_7d", dtype=Int64),
        Field(name="user_amount_sum_24h", dtype=Float64),
        Field(name="user_amount_max_24h", dtype=Float64),
        Field(name="user_amount_mean_7d", dtype=Float64),
        Field(name="user_amount_std_7d", dtype=Float64),
        Field(name="user_distinct_merchants_24h", dtype=Int64),
        Field(name="user_distinct_countries_24h", dtype=Int64),
        Field(name="user_new_device", dtype=Int64),
        Field(name="user_seconds_since_prev_txn", dtype=Float64),
        Field(name="user_amount_to_mean_7d", dtype=Float64),
    ],
    source=transaction_features_source,
    online=True,
    tags={"owner": "fraud", "stage": "features"},
)

merchant_risk = FeatureView(
    name="merchant_risk",
    entities=[merchant],
    ttl=timedelta(days=14),
    schema=[
        Field(name="merchant_txn_count_24h", dtype=Int64),
        Field(name="merchant_txn_count_14d", dtype=Int64),
        Field(name="merchant_fraud_reports_14d", dtype=Int64),
        Field(name="merchant_fraud_rate_14d", dtype=Float64),
    ],
    source=transaction_features_source,
    online=True,
    tags={"owner": "fraud", "stage": "features"},
)

fraud_v1 = FeatureService(
    name="fraud_v1",
    features=[user_activity, merchant_risk],
    description="Features of fraud model v1: user activity and merchant risk.",
    tags={"version": "1"},
)
