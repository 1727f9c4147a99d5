"""Feast definitions for driftline's fraud features (declarative only).

Entities, join keys, TTLs, view and service names and every field come from
:mod:`driftline.core.feature_spec`, the one declaration of the stored features; this
file only says how they map onto Feast objects.

Both feature views read the per-transaction feature table that the Spark job writes
(``{lake}/features/transaction_features/dt=YYYY-MM-DD/``); each view keeps the columns
that describe its entity. The lake is the ``DRIFTLINE_LAKE_URI`` environment variable
(the same one driftline's settings read; ``s3://...`` in production) or, unset, the
default lake of a checkout, ``../.driftline/lake``, which Feast resolves relative to
this folder; an ``s3://`` lake on a custom endpoint is reached through the standard
``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` variables. ``feast apply`` / ``feast
materialize`` therefore need nothing but this folder, those variables and a
``feature_store.yaml`` (``feature_store.yaml`` here for local use,
``environments/<env>/feature_store.yaml`` for the others, passed with ``-f``).
driftline itself (:mod:`driftline.data.feast`) applies these same objects with the
source pointed at ``Settings.lake_uri``.
"""

import os

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64, PrimitiveFeastType

from driftline.core.feature_spec import (
    ENTITY_TTL,
    FEATURE_SERVICE,
    FEATURE_SPEC,
    FEATURE_TABLE,
    FEATURE_VIEWS,
    JOIN_KEYS,
)

#: The lake when ``DRIFTLINE_LAKE_URI`` is unset: driftline's default
#: (``$PWD/.driftline/lake``) for a checkout run from its root, relative to this folder.
DEFAULT_LAKE = "../.driftline/lake"
LAKE = os.environ.get("DRIFTLINE_LAKE_URI") or DEFAULT_LAKE

FEAST_TYPES: dict[str, PrimitiveFeastType] = {"int64": Int64, "float64": Float64}
TAGS = {"owner": "fraud", "stage": "features"}

user = Entity(
    name="user",
    join_keys=[JOIN_KEYS["user"]],
    value_type=ValueType.INT64,
    description="A cardholder.",
)
merchant = Entity(
    name="merchant",
    join_keys=[JOIN_KEYS["merchant"]],
    value_type=ValueType.INT64,
    description="A card acceptor.",
)

transaction_features_source = FileSource(
    name=FEATURE_TABLE,
    path=f"{LAKE.rstrip('/')}/features/{FEATURE_TABLE}",
    timestamp_field="event_timestamp",
    # An s3:// lake on a custom endpoint (the production profile's moto server, MinIO):
    # Feast's pyarrow and dask S3 readers take it from here, not from the AWS variables.
    # The variables' order is driftline.core.lake.s3_endpoint's (not imported: this repo
    # reads the standard library, Feast and the feature spec only).
    s3_endpoint_override=(
        os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    )
    if LAKE.startswith("s3://")
    else "",
    description="Per-transaction windowed features written by the Spark feature job.",
)


def _view(entity: Entity) -> FeatureView:
    """The feature view of ``entity``: its features of the spec, in declaration order."""
    return FeatureView(
        name=FEATURE_VIEWS[entity.name],
        entities=[entity],
        ttl=ENTITY_TTL[entity.name],
        schema=[
            Field(name=f.name, dtype=FEAST_TYPES[f.dtype], description=f.description)
            for f in FEATURE_SPEC
            if f.entity == entity.name
        ],
        source=transaction_features_source,
        online=True,
        tags=TAGS,
    )


user_activity = _view(user)
merchant_risk = _view(merchant)

fraud_v1 = FeatureService(
    name=FEATURE_SERVICE,
    features=[user_activity, merchant_risk],
    description="Features of fraud model v1: user activity and merchant risk.",
    tags={"version": "1"},
)
