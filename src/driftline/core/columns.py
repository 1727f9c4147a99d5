"""The model-input contract shared by the training set, the models and serving.

A *model frame* is a pandas DataFrame with one row per transaction and at least the
columns below. The training set writes them; the scoring service builds the same
columns from the request (request-time fields), Feast online features (day-old store
features) and the event state (fresh features, as of just before the transaction); the
preprocessor saved with each model turns them into tensors. Store feature values may be
missing (NaN) when an entity has no history inside the feature view's TTL; fresh ones
when serving could not read the event state (a fallback row).
"""

from __future__ import annotations

from driftline.core.feature_spec import FRESH_FEATURES, MERCHANT_FEATURES, USER_FEATURES

#: Fields known at request time, taken from the transaction itself.
REQUEST_NUMERIC: tuple[str, ...] = ("amount", "hour_of_day")
REQUEST_CATEGORICAL: tuple[str, ...] = (
    "merchant_category",
    "merchant_country",
    "channel",
    "currency",
)
#: Features read from Feast (feature service ``fraud_v1``), by entity key.
STORE_NUMERIC: tuple[str, ...] = USER_FEATURES + MERCHANT_FEATURES
#: Fresh features (``FRESH_SPEC``): online from the event state, offline from the lake.
FRESH_NUMERIC: tuple[str, ...] = FRESH_FEATURES

NUMERIC: tuple[str, ...] = REQUEST_NUMERIC + STORE_NUMERIC + FRESH_NUMERIC
CATEGORICAL: tuple[str, ...] = REQUEST_CATEGORICAL
#: Every column a model reads, in a fixed order.
MODEL_INPUTS: tuple[str, ...] = NUMERIC + CATEGORICAL

#: Identifiers and time carried along for splits, joins and logs (never model inputs).
KEYS: tuple[str, ...] = ("transaction_id", "user_id", "merchant_id", "event_timestamp")
#: Binary target: 1 when a chargeback was reported by the label cut-off.
LABEL = "label"
