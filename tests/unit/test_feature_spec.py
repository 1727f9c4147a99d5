"""Everything that names the stored features agrees with driftline.core.feature_spec.

The Spark job's output schema, the Feast repository, the GX ``features`` suite and the
model's input columns are each compared with the spec (names, order, dtypes, entities,
keys, TTLs, bounds). Fast: no Spark session, no Feast store, no GX context.
"""

from __future__ import annotations

import ast
import json
import runpy
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pytest

from driftline.core import columns
from driftline.core.feature_spec import (
    ENTITY_TTL,
    FEATURE_SERVICE,
    FEATURE_SPEC,
    FEATURE_TABLE,
    FEATURE_VIEWS,
    JOIN_KEYS,
    MERCHANT_FEATURES,
    USER_FEATURES,
    Feature,
)
from driftline.data.features import DATASET, FEATURES
from tests.conftest import REPO

DEFINITIONS = REPO / "feature_repo" / "features.py"
SUITE = REPO / "great_expectations" / "expectations" / "features.json"
NAMES = tuple(f.name for f in FEATURE_SPEC)
#: Columns of a feature row that are not features: keys, time, the request amount.
NOT_FEATURES = ("transaction_id", "user_id", "merchant_id", "event_timestamp", "amount")
ARROW = {"int64": pa.int64(), "float64": pa.float64()}
#: Pandas dtypes a GX type check must admit for each spec dtype.
PANDAS = {"int64": "int64", "float64": "float64"}


# ---------------------------------------------------------------------------- the spec


def test_spec_is_well_formed() -> None:
    assert len(set(NAMES)) == len(NAMES)
    assert NAMES == USER_FEATURES + MERCHANT_FEATURES  # grouped by entity, users first
    for feature in FEATURE_SPEC:
        assert feature.name.startswith(f"{feature.entity}_"), feature.name
        assert feature.description.strip(), feature.name
        if feature.window is not None:
            assert feature.window <= ENTITY_TTL[feature.entity], feature.name
        if feature.values is not None:
            assert feature.minimum is None and feature.maximum is None, feature.name
    assert set(JOIN_KEYS) == set(ENTITY_TTL) == set(FEATURE_VIEWS) == {"user", "merchant"}
    assert DATASET == FEATURE_TABLE


def test_model_store_columns_are_the_spec() -> None:
    assert columns.STORE_NUMERIC == NAMES
    assert not set(columns.REQUEST_NUMERIC) & set(NAMES)


# ------------------------------------------------------------------------------- Spark


def test_spark_output_schema_is_the_spec() -> None:
    assert tuple(FEATURES.names) == NOT_FEATURES + NAMES
    for feature in FEATURE_SPEC:
        assert FEATURES.field(feature.name).type == ARROW[feature.dtype], feature.name
    for key in JOIN_KEYS.values():
        assert FEATURES.field(key).type == pa.int64()
        assert not FEATURES.field(key).nullable


# ------------------------------------------------------------------------------- Feast


@pytest.fixture(scope="module")
def feast_objects() -> Iterator[dict[str, Any]]:
    """The objects ``feature_repo/features.py`` declares, as ``feast apply`` sees them."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("DRIFTLINE_LAKE_URI", raising=False)
        yield runpy.run_path(str(DEFINITIONS))


def _of_kind(namespace: dict[str, Any], kind: type[Any]) -> dict[str, Any]:
    return {obj.name: obj for obj in namespace.values() if isinstance(obj, kind)}


def test_feast_entities_are_the_spec(feast_objects: dict[str, Any]) -> None:
    from feast import Entity, ValueType

    entities = _of_kind(feast_objects, Entity)
    assert {name: e.join_key for name, e in entities.items()} == JOIN_KEYS
    for entity in entities.values():
        assert entity.value_type == ValueType.INT64  # the lake's key type (int64)


def test_feast_views_are_the_spec(feast_objects: dict[str, Any]) -> None:
    from feast import FeatureView
    from feast.types import Float64, Int64

    feast_types = {"int64": Int64, "float64": Float64}
    views = _of_kind(feast_objects, FeatureView)
    assert set(views) == set(FEATURE_VIEWS.values())
    for entity, view_name in FEATURE_VIEWS.items():
        view = views[view_name]
        assert view.entities == [entity]
        assert view.ttl == ENTITY_TTL[entity]
        assert view.online
        spec = [f for f in FEATURE_SPEC if f.entity == entity]
        assert [f.name for f in view.features] == [f.name for f in spec]
        assert [f.dtype for f in view.features] == [feast_types[f.dtype] for f in spec]
        assert [f.description for f in view.features] == [f.description for f in spec]
        assert view.batch_source.name == FEATURE_TABLE
        assert view.batch_source.timestamp_field == "event_timestamp"


def test_feast_service_serves_every_spec_feature(feast_objects: dict[str, Any]) -> None:
    from feast import FeatureService

    services = _of_kind(feast_objects, FeatureService)
    assert list(services) == [FEATURE_SERVICE]
    served = [
        (projection.name, feature.name)
        for projection in services[FEATURE_SERVICE].feature_view_projections
        for feature in projection.features
    ]
    assert served == [(FEATURE_VIEWS[f.entity], f.name) for f in FEATURE_SPEC]


def test_feast_source_defaults_to_the_checkout_lake(feast_objects: dict[str, Any]) -> None:
    """Relative to feature_repo/ (Feast resolves it there): driftline's default lake."""
    from feast import FileSource

    [source] = _of_kind(feast_objects, FileSource).values()
    assert source.path == f"../.driftline/lake/features/{FEATURE_TABLE}"


def test_feast_source_follows_the_lake_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from feast import FileSource

    monkeypatch.setenv("DRIFTLINE_LAKE_URI", "s3://bucket/lake/")
    [source] = _of_kind(runpy.run_path(str(DEFINITIONS)), FileSource).values()
    assert source.path == f"s3://bucket/lake/features/{FEATURE_TABLE}"


def test_feast_repo_needs_no_driftline_settings() -> None:
    """The declarative repo imports Feast, the standard library and the spec only."""
    tree = ast.parse(DEFINITIONS.read_text(encoding="utf-8"))
    modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules |= {
        a.name for node in ast.walk(tree) if isinstance(node, ast.Import) for a in node.names
    }
    driftline = {m for m in modules if m and m.split(".")[0] == "driftline"}
    assert driftline == {"driftline.core.feature_spec"}
    spec_tree = ast.parse((REPO / "src/driftline/core/feature_spec.py").read_text())
    assert not any(
        isinstance(node, ast.ImportFrom) and (node.module or "").startswith("driftline")
        for node in ast.walk(spec_tree)
    )


# ---------------------------------------------------------------------------------- GX


def _suite() -> list[dict[str, Any]]:
    expectations: list[dict[str, Any]] = json.loads(SUITE.read_text())["expectations"]
    return expectations


def _about(column: str) -> list[dict[str, Any]]:
    return [e for e in _suite() if e["kwargs"].get("column") == column]


def _referenced(expectation: dict[str, Any]) -> set[str]:
    kwargs = expectation["kwargs"]
    names = {kwargs.get(key) for key in ("column", "column_A", "column_B")} - {None}
    return names | set(kwargs.get("column_list") or [])


def test_suite_columns_are_the_feature_table() -> None:
    [columns_check] = [e for e in _suite() if e["type"] == "expect_table_columns_to_match_set"]
    column_set = columns_check["kwargs"]["column_set"]
    assert len(column_set) == len(set(column_set))
    assert set(column_set) == set(FEATURES.names)  # every spec feature, nothing else
    for expectation in _suite():
        assert _referenced(expectation) <= set(column_set), expectation


def _type_admits(expectation: dict[str, Any], feature: Feature) -> bool:
    kwargs = expectation["kwargs"]
    if expectation["type"] == "expect_column_values_to_be_of_type":
        return bool(kwargs["type_"] == PANDAS[feature.dtype])
    if expectation["type"] == "expect_column_values_to_be_in_type_list":
        return PANDAS[feature.dtype] in kwargs["type_list"]
    return False


@pytest.mark.parametrize("feature", FEATURE_SPEC, ids=NAMES)
def test_suite_checks_the_type_of_every_feature(feature: Feature) -> None:
    assert any(_type_admits(e, feature) for e in _about(feature.name))


@pytest.mark.parametrize("feature", FEATURE_SPEC, ids=NAMES)
def test_suite_bounds_are_the_spec(feature: Feature) -> None:
    """A feature's range (or set) check in the suite is exactly its spec domain."""
    between = [
        (e["kwargs"].get("min_value"), e["kwargs"].get("max_value"))
        for e in _about(feature.name)
        if e["type"] == "expect_column_values_to_be_between"
    ]
    in_set = [
        tuple(e["kwargs"]["value_set"])
        for e in _about(feature.name)
        if e["type"] == "expect_column_values_to_be_in_set"
    ]
    bounded = feature.minimum is not None or feature.maximum is not None
    assert between == ([(feature.minimum, feature.maximum)] if bounded else [])
    assert in_set == ([feature.values] if feature.values is not None else [])
