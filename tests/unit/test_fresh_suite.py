"""The committed GX suite of the fresh features is the one derived from FRESH_SPEC.

Fast: JSON and the spec only, no GX context (the suite's behaviour on data is in
``tests/integration/test_fresh_validation.py``).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from driftline.core.feature_spec import FRESH_SPEC, SECONDS_SINCE_CAP, FreshFeature
from driftline.data.fresh import FRESH, SUITE, fresh_suite
from driftline.data.validate import SUITES, checkpoint_path, suite_path
from tests.conftest import REPO

GX_DIR = REPO / "great_expectations"
REGENERATE = (
    "python -c 'import json; from driftline.data.fresh import fresh_suite; "
    "print(json.dumps(fresh_suite(), indent=2))' > great_expectations/expectations/"
    "fresh_features.json"
)


def _committed() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(suite_path(SUITE, GX_DIR).read_text(encoding="utf-8"))
    return data


def _about(column: str, kind: str) -> list[dict[str, Any]]:
    return [
        e["kwargs"]
        for e in _committed()["expectations"]
        if e["type"] == kind and e["kwargs"].get("column") == column
    ]


def test_committed_suite_is_the_generated_one() -> None:
    assert _committed() == fresh_suite(), f"regenerate it: {REGENERATE}"


def test_suite_is_registered_with_its_checkpoint() -> None:
    assert SUITE in SUITES
    checkpoint = json.loads(checkpoint_path(SUITE, GX_DIR).read_text(encoding="utf-8"))
    assert checkpoint["name"] == SUITE
    assert checkpoint["validation_definitions"] == [{"name": SUITE}]


def test_columns_are_exactly_the_partition_schema() -> None:
    [columns] = [
        e["kwargs"]
        for e in _committed()["expectations"]
        if e["type"] == "expect_table_columns_to_match_set"
    ]
    assert columns == {"column_set": FRESH.names, "exact_match": True}
    for name in FRESH.names:
        assert _about(name, "expect_column_values_to_not_be_null") == [{"column": name}]


@pytest.mark.parametrize("feature", FRESH_SPEC, ids=[f.name for f in FRESH_SPEC])
def test_each_feature_has_its_spec_type_and_domain(feature: FreshFeature) -> None:
    name = feature.name
    assert _about(name, "expect_column_values_to_be_of_type") == [
        {"column": name, "type_": feature.dtype}
    ]
    in_set = _about(name, "expect_column_values_to_be_in_set")
    between = _about(name, "expect_column_values_to_be_between")
    if feature.dtype == "int64" and feature.maximum == 1:
        assert (in_set, between) == ([{"column": name, "value_set": [0, 1]}], [])
    else:
        bounds = {"min_value": feature.minimum, "max_value": feature.maximum}
        expected = {"column": name} | {k: v for k, v in bounds.items() if v is not None}
        assert (in_set, between) == ([], [expected])


def test_the_obvious_bounds_hold() -> None:
    """What the spec says in words, checked apart from the derivation."""
    minima = {
        e["kwargs"]["column"]: e["kwargs"].get("min_value")
        for e in _committed()["expectations"]
        if e["type"] == "expect_column_values_to_be_between"
    }
    counts = [f.name for f in FRESH_SPEC if "_txn_count_" in f.name]
    assert len(counts) == 5 and all(minima[name] == 0 for name in counts)
    since = _about("fresh_user_seconds_since_prev", "expect_column_values_to_be_between")
    assert since == [
        {"column": "fresh_user_seconds_since_prev", "min_value": 0, "max_value": SECONDS_SINCE_CAP}
    ]
    pairs = {
        (e["kwargs"]["column_A"], e["kwargs"]["column_B"])
        for e in _committed()["expectations"]
        if e["type"] == "expect_column_pair_values_a_to_be_greater_than_b"
    }
    assert pairs == {
        ("fresh_user_txn_count_1h", "fresh_user_txn_count_10m"),
        ("fresh_user_txn_count_24h", "fresh_user_txn_count_1h"),
        ("fresh_user_txn_count_7d", "fresh_user_txn_count_24h"),
        ("fresh_user_amount_sum_24h", "fresh_user_amount_sum_1h"),
    }
