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


# ---------------------------------------------------------------------------------------
# Fresh features: the speed layer (see ``driftline.core.fresh`` for the one computation).
# ---------------------------------------------------------------------------------------

FreshKind = Literal["velocity", "request"]

#: The longest look-back of any fresh feature: the event state keeps this much history.
FRESH_RETENTION = timedelta(days=7)
#: ``fresh_user_seconds_since_prev`` when the user has no earlier transaction in the state.
SECONDS_SINCE_CAP = FRESH_RETENTION.total_seconds()


@dataclass(frozen=True)
class FreshFeature:
    """One feature computed per transaction as of just before it (online and offline).

    Every earlier transaction counts: an event ``e`` is *earlier* than the scored
    transaction ``x`` when ``(e.ts, e.transaction_id) < (x.ts, x.transaction_id)``; it is
    inside a window ``w`` when also ``e.ts > x.ts - w`` (half-open ``(t - w, t)``, so an
    event exactly ``w`` before is out). The scored transaction itself never counts, and
    a transaction id counts once however often it is replayed.

    Attributes:
        name: Column name in the model frame, the prediction log and the offline table.
        kind: ``velocity`` (an aggregate of the entity's earlier events) or ``request``
            (the request compared with the entity's stored profile).
        entity: Entity whose earlier events it reads.
        dtype: Arrow value type.
        window: Look-back window.
        description: What the value means.
        minimum: Smallest valid value.
        maximum: Largest valid value, if bounded.
    """

    name: str
    kind: FreshKind
    entity: Entity
    dtype: Dtype
    window: timedelta
    description: str
    minimum: float | None = 0
    maximum: float | None = None


_M10 = timedelta(minutes=10)
_W7 = FRESH_RETENTION

FRESH_SPEC: tuple[FreshFeature, ...] = (
    FreshFeature(
        "fresh_user_txn_count_10m",
        "velocity",
        "user",
        "int64",
        _M10,
        "The user's earlier transactions in the window.",
    ),
    FreshFeature(
        "fresh_user_txn_count_1h",
        "velocity",
        "user",
        "int64",
        _H,
        "The user's earlier transactions in the window.",
    ),
    FreshFeature(
        "fresh_user_txn_count_24h",
        "velocity",
        "user",
        "int64",
        _D,
        "The user's earlier transactions in the window.",
    ),
    FreshFeature(
        "fresh_user_amount_sum_1h",
        "velocity",
        "user",
        "float64",
        _H,
        "Sum of the user's earlier amounts in the window.",
    ),
    FreshFeature(
        "fresh_user_amount_sum_24h",
        "velocity",
        "user",
        "float64",
        _D,
        "Sum of the user's earlier amounts in the window.",
    ),
    FreshFeature(
        "fresh_user_distinct_merchants_1h",
        "velocity",
        "user",
        "int64",
        _H,
        "Distinct merchants of the user's earlier transactions in the window.",
    ),
    FreshFeature(
        "fresh_user_distinct_devices_24h",
        "velocity",
        "user",
        "int64",
        _D,
        "Distinct devices of the user's earlier transactions in the window.",
    ),
    FreshFeature(
        "fresh_merchant_txn_count_1h",
        "velocity",
        "merchant",
        "int64",
        _H,
        "The merchant's earlier transactions in the window.",
    ),
    FreshFeature(
        "fresh_user_txn_count_7d",
        "request",
        "user",
        "int64",
        _W7,
        "The user's earlier transactions in the window (the profile's size).",
    ),
    FreshFeature(
        "fresh_user_device_new",
        "request",
        "user",
        "int64",
        _W7,
        "1 if this device is not among the devices of the user's earlier transactions in "
        "the window (or the device is unknown); 0 if it is, and when the user has none.",
        maximum=1,
    ),
    FreshFeature(
        "fresh_user_country_foreign",
        "request",
        "user",
        "int64",
        _W7,
        "1 if the merchant's country is not among the countries of the user's earlier "
        "transactions in the window; 0 if it is, and when the user has none.",
        maximum=1,
    ),
    FreshFeature(
        "fresh_user_merchant_new",
        "request",
        "user",
        "int64",
        _W7,
        "1 if the user has no earlier transaction at this merchant in the window; 0 if it "
        "has, and when the user has none.",
        maximum=1,
    ),
    FreshFeature(
        "fresh_user_amount_to_median_7d",
        "request",
        "user",
        "float64",
        _W7,
        "This amount over the median of the user's earlier amounts in the window (the "
        "median floored at 0.01); 1 when the user has none.",
    ),
    FreshFeature(
        "fresh_user_seconds_since_prev",
        "request",
        "user",
        "float64",
        _W7,
        "Seconds since the user's latest earlier transaction in the window; the window "
        "(7 days) when there is none.",
        maximum=SECONDS_SINCE_CAP,
    ),
)

#: Names of the fresh features, in declaration order (model-frame columns).
FRESH_FEATURES: tuple[str, ...] = tuple(f.name for f in FRESH_SPEC)
#: The longest window of any fresh feature per entity (how much history each keeps).
FRESH_WINDOWS: dict[str, timedelta] = {
    entity: max(f.window for f in FRESH_SPEC if f.entity == entity)
    for entity in ("user", "merchant")
}
