"""The fresh-feature job's gate: the GX ``fresh_features`` suite before anything is published.

A small lake (four simulated days through the real raw gate; no Spark: the fresh job reads
raw transactions only). A day the job computed passes; the same day with one corrupted
value fails with a message naming the expectation and the column, is quarantined, and no
day of the interval is published (a published day keeps its bytes).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data import quarantine
from driftline.data.errors import BatchQuarantined
from driftline.data.fresh import (
    DATASET,
    SUITE,
    ZONE,
    build_fresh_features,
    compute_fresh_interval,
    publish_fresh,
)
from driftline.data.validate import validate_frame
from driftline.simulator import SimulatorConfig
from tests.lakes import publish_days

SPAN = Interval.parse("2026-01-01", "2026-01-05")
PUBLISHED = date(2026, 1, 2)
#: Computed in the tests, never published by the fixture.
LATER = Interval.parse("2026-01-03", "2026-01-05")
CONFIG = SimulatorConfig(rows_per_day=300, n_users=40, n_merchants=15, fraud_rate=0.03)

Corruption = Callable[[pa.Table], pa.Table]


@pytest.fixture(scope="module")
def lake_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Four validated raw days (data starts 2026-01-01), fresh features of the second.

    Every call below is handed these settings (the data start comes from the session's
    ``DRIFTLINE_DATA_START``); nothing reads the process-wide ones.
    """
    settings = Settings(home=tmp_path_factory.mktemp("fresh_validation") / "state")
    assert settings.data_start == SPAN.start.date()
    publish_days(settings, SPAN, CONFIG)
    build_fresh_features(Interval.for_day(PUBLISHED), settings)
    return settings


def _file(settings: Settings, day: date) -> Path:
    return Path(lake.partition_file(settings.lake_uri, ZONE, DATASET, day))


def _set(table: pa.Table, column: str, row: int, value: object) -> pa.Table:
    """``table`` with ``column``'s value at ``row`` replaced (same type, or null)."""
    values = table[column].to_pylist()
    values[row] = value
    index = table.schema.get_field_index(column)
    return table.set_column(index, table.schema.field(column), pa.array(values, table[column].type))


def _as_float(table: pa.Table, column: str) -> pa.Table:
    """``table`` with the integer ``column`` stored as float64 (same values)."""
    index = table.schema.get_field_index(column)
    return table.set_column(index, column, pc.cast(table[column], pa.float64()))


CORRUPTIONS: dict[str, tuple[Corruption, str, str]] = {
    "negative count": (
        lambda t: _set(t, "fresh_merchant_txn_count_1h", 7, -1),
        "expect_column_values_to_be_between(fresh_merchant_txn_count_1h)",
        "1 unexpected",
    ),
    "flag 2": (
        lambda t: _set(t, "fresh_user_device_new", 3, 2),
        "expect_column_values_to_be_in_set(fresh_user_device_new)",
        "1 unexpected",
    ),
    "null seconds since": (
        lambda t: _set(t, "fresh_user_seconds_since_prev", 0, None),
        "expect_column_values_to_not_be_null(fresh_user_seconds_since_prev)",
        "1 unexpected",
    ),
    "count as float": (
        lambda t: _as_float(t, "fresh_user_txn_count_24h"),
        "expect_column_values_to_be_of_type(fresh_user_txn_count_24h)",
        "expected int64",
    ),
}


def test_a_computed_day_passes_and_is_published(lake_settings: Settings) -> None:
    table = lake.read_file(str(_file(lake_settings, PUBLISHED)))
    outcome = validate_frame(table, SUITE, Interval.for_day(PUBLISHED), lake_settings)
    assert outcome.success, outcome.failed_expectations
    assert outcome.statistics["evaluated_expectations"] > 50
    assert table.num_rows > 250
    assert quarantine.entries(lake_settings.lake_uri, DATASET, PUBLISHED) == []


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
def test_a_corrupted_day_fails_naming_the_column_and_nothing_is_published(
    lake_settings: Settings, kind: str
) -> None:
    corrupt, expectation, detail = CORRUPTIONS[kind]
    tables, _ = compute_fresh_interval(LATER, lake_settings)
    first, last = sorted(tables)
    tables[last] = corrupt(tables[last])
    before = quarantine.entries(lake_settings.lake_uri, DATASET, last)

    with pytest.raises(BatchQuarantined) as failure:
        publish_fresh(tables, lake_settings)

    message = str(failure.value)
    assert f"fresh features for {last} failed validation" in message
    assert expectation in message and detail in message, message
    assert message.count("expect_") == 1, message  # only the corrupted value fails
    assert not _file(lake_settings, first).exists()  # the good day waits for the bad one
    assert not _file(lake_settings, last).exists()
    after = quarantine.entries(lake_settings.lake_uri, DATASET, last)
    assert len(after) == len(before) + 1
    entry = failure.value.quarantine_uri
    assert after[-1] == entry
    fs, path = lake.filesystem(entry)
    assert expectation in fs.cat_file(f"{path}/reason.txt").decode()
    assert lake.read_file(f"{entry}/{DATASET}.parquet").equals(tables[last])


def test_a_failed_rerun_leaves_the_published_day_unchanged(lake_settings: Settings) -> None:
    path = _file(lake_settings, PUBLISHED)
    published = path.read_bytes()
    tables, _ = compute_fresh_interval(Interval.for_day(PUBLISHED), lake_settings)
    bad = _set(tables[PUBLISHED], "fresh_user_amount_sum_1h", 5, 1e12)  # above its 24h sum

    with pytest.raises(BatchQuarantined, match=r"fresh_user_amount_sum_24h, fresh_user_amou"):
        publish_fresh({PUBLISHED: bad}, lake_settings)
    assert path.read_bytes() == published
