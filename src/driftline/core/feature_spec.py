"""The one declaration of every stored feature: name, entity, dtype, window, meaning.

The Spark job's output schema (:data:`driftline.data.features.FEATURES`), the Feast
feature views (``feature_repo/features.py``), the model's inputs
(:mod:`driftline.core.columns`) and the GX ``features`` suite are derived from this list
or checked against it by ``tests/unit/test_feature_spec.py``. The DuckDB reference
(:mod:`driftline.data.reference`) stays an independent implementation of the same
definitions, compared on equal output.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

Entity = Literal["user", "merchant"]
Dtype = Literal["int64", "float64"]

#: The join key of each entity in the lake, Feast and the scoring request.
JOIN_KEYS: dict[str, str] = {"user": "user_id", "merchant": "merchant_id"}
#: How long an online value stays valid (the Feast view's TTL) per entity.
ENTITY_TTL: dict[str, timedelta] = {"user": timedelta(days=7), "merchant": timedelta(days=14)}
#: The Feast feature view of each entity.
FEATURE_VIEWS: dict[str, str] = {"user": "user_activity", "merchant": "merchant_risk"}
#: The Feast feature service the model is trained and served with.
FEATURE_SERVICE = "fraud_v1"
#: The lake dataset of feature rows (``{lake}/features/<table>/dt=YYYY-MM-DD/``), which is
#: also the name of the Feast file source both views read.
FEATURE_TABLE = "transaction_features"


@dataclass(frozen=True)
class Feature:
    """One stored feature of one entity, right after each of its transactions.

    Attributes:
        name: Column name in the lake, Feast and the model frame.
        entity: Entity whose state it describes.
        dtype: Arrow/Feast value type.
        window: Half-open look-back window ``(t - window, t]``; ``None`` for a
            point value.
        description: What the value means.
        minimum: Smallest valid value, if the GX ``features`` suite bounds it.
        maximum: Largest valid value, if the GX ``features`` suite bounds it.
        values: The only valid values, if the suite checks a closed set instead.
    """

    name: str
    entity: Entity
    dtype: Dtype
    window: timedelta | None
    description: str
    minimum: float | None = None
    maximum: float | None = None
    values: tuple[int, ...] | None = None


_H, _D = timedelta(hours=1), timedelta(days=1)

# Windows are the half-open ``(t - w, t]`` of the Spark job: the row's own transaction is
# always inside, so counts are >= 1 and "distinct" sets hold at least its own value.
FEATURE_SPEC: tuple[Feature, ...] = (
    Feature(
        "user_txn_count_1h",
        "user",
        "int64",
        _H,
        "Transactions of the user in the window, this one included.",
        minimum=1,
    ),
    Feature(
        "user_txn_count_24h",
        "user",
        "int64",
        _D,
        "Transactions of the user in the window, this one included.",
        minimum=1,
    ),
    Feature(
        "user_txn_count_7d",
        "user",
        "int64",
        7 * _D,
        "Transactions of the user in the window, this one included.",
        minimum=1,
    ),
    Feature(
        "user_amount_sum_24h",
        "user",
        "float64",
        _D,
        "Sum of the user's amounts in the window, this one included.",
        minimum=0,
    ),
    Feature(
        "user_amount_max_24h",
        "user",
        "float64",
        _D,
        "Largest amount of the user in the window, this one included.",
    ),
    Feature(
        "user_amount_mean_7d",
        "user",
        "float64",
        7 * _D,
        "Mean amount of the user in the window, this one included.",
    ),
    Feature(
        "user_amount_std_7d",
        "user",
        "float64",
        7 * _D,
        "Sample standard deviation of the user's amounts in the window; 0 for a single "
        "transaction.",
        minimum=0,
    ),
    Feature(
        "user_distinct_merchants_24h",
        "user",
        "int64",
        _D,
        "Distinct merchants the user paid in the window, this one included.",
        minimum=1,
    ),
    Feature(
        "user_distinct_countries_24h",
        "user",
        "int64",
        _D,
        "Distinct merchant countries of the user's transactions in the window.",
        minimum=0,
    ),
    Feature(
        "user_new_device",
        "user",
        "int64",
        7 * _D,
        "1 if the user had not used this transaction's device in the window before it; "
        "0 otherwise and when the device is unknown.",
        values=(0, 1),
    ),
    Feature(
        "user_seconds_since_prev_txn",
        "user",
        "float64",
        None,
        "Seconds since the user's previous transaction, capped at 7 days (7 days when "
        "there is none).",
        minimum=0,
    ),
    Feature(
        "user_amount_to_mean_7d",
        "user",
        "float64",
        7 * _D,
        "This transaction's amount divided by user_amount_mean_7d.",
    ),
    Feature(
        "merchant_txn_count_24h",
        "merchant",
        "int64",
        _D,
        "Transactions of the merchant in the window, this one included.",
        minimum=1,
    ),
    Feature(
        "merchant_txn_count_14d",
        "merchant",
        "int64",
        14 * _D,
        "Transactions of the merchant in the window, this one included.",
        minimum=1,
    ),
    Feature(
        "merchant_fraud_reports_14d",
        "merchant",
        "int64",
        14 * _D,
        "Chargebacks against the merchant whose report time (label_ts) is in the window, "
        "whenever the charged-back transaction happened.",
        minimum=0,
    ),
    Feature(
        "merchant_fraud_rate_14d",
        "merchant",
        "float64",
        14 * _D,
        "merchant_fraud_reports_14d over merchant_txn_count_14d, capped at 1 (a report may "
        "concern a transaction older than the window).",
        minimum=0,
        maximum=1,
    ),
)


def features_of(entity: Entity) -> tuple[str, ...]:
    """Names of the features of ``entity``, in declaration order."""
    return tuple(f.name for f in FEATURE_SPEC if f.entity == entity)


USER_FEATURES: tuple[str, ...] = features_of("user")
MERCHANT_FEATURES: tuple[str, ...] = features_of("merchant")
