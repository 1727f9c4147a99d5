"""The validation gate: every kind of bad batch is quarantined and loses nothing."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.ingest import (
    BatchQuarantined,
    LandingFileError,
    ingest,
    publish_validated,
)
from driftline.simulator import BadBatch, SimulatorConfig, write_landing

DAY1, DAY2 = date(2026, 1, 1), date(2026, 1, 2)

# kind -> (dataset, a fragment the error message must contain)
BAD_KINDS = {
    "missing_column": ("transactions", "amount"),
    "wrong_type": ("transactions", "amount"),
    "null_keys": ("transactions", "expect_column_values_to_not_be_null"),
    "negative_amount": ("transactions", "expect_column_values_to_be_between(amount)"),
    "absurd_amount": ("transactions", "expect_column_values_to_be_between(amount)"),
    "duplicate_ids": ("transactions", "expect_column_values_to_be_unique(transaction_id)"),
    "empty_file": ("transactions", "expect_table_row_count_to_be_between"),
    "ts_outside_interval": ("transactions", "(ts)"),
    "unknown_currency": ("transactions", "expect_column_values_to_be_in_set(currency)"),
    "missing_column@labels": ("labels", "is_fraud"),
}


def _run_day(dataset: str, day: date, settings: Settings) -> None:
    interval = Interval.for_day(day)
    ingest(dataset, interval, settings)
    publish_validated(dataset, interval, settings)


@pytest.mark.parametrize("case", sorted(BAD_KINDS))
def test_bad_batch_is_quarantined_and_prior_data_intact(case: str, settings: Settings) -> None:
    kind = case.split("@")[0]
    dataset, fragment = BAD_KINDS[case]
    config = SimulatorConfig(
        rows_per_day=600,
        bad_batches=(BadBatch(kind, DAY2, dataset),),  # type: ignore[arg-type]
    )
    write_landing(config, Interval(DAY1, DAY2 + timedelta(days=1)), settings.lake_uri)
    _run_day(dataset, DAY1, settings)
    good = lake.partition_file(settings.lake_uri, "raw", dataset, DAY1)
    before = lake.filesystem(good)[0].cat_file(lake.filesystem(good)[1])

    with pytest.raises(BatchQuarantined) as rejected:
        _run_day(dataset, DAY2, settings)

    assert fragment in str(rejected.value)
    assert "quarantined" in str(rejected.value)
    assert not lake.exists(lake.partition_uri(settings.lake_uri, "raw", dataset, DAY2))
    quarantined = rejected.value.quarantine_uri  # the rejection's own entry
    day_folder = lake.partition_uri(settings.lake_uri, "quarantine", dataset, DAY2)
    assert quarantined == f"{day_folder}/attempt=1"
    assert lake.exists(f"{quarantined}/{dataset}.parquet")
    result = json.loads(
        lake.filesystem(quarantined)[0].cat_file(f"{quarantined}/validation_result.json")
    )
    assert result["reason"]
    fs, path = lake.filesystem(good)
    assert fs.cat_file(path) == before


def test_unreadable_landing_file_is_quarantined(settings: Settings) -> None:
    uri = lake.landing_file(settings.lake_uri, "transactions", DAY1)
    fs, path = lake.filesystem(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, b"")
    with pytest.raises(BatchQuarantined, match="empty or unreadable"):
        ingest("transactions", Interval.for_day(DAY1), settings)
    assert lake.exists(lake.partition_uri(settings.lake_uri, "quarantine", "transactions", DAY1))


def test_missing_landing_file_is_a_clear_error(settings: Settings) -> None:
    with pytest.raises(LandingFileError, match="no landing file for transactions on 2026-01-01"):
        ingest("transactions", Interval.for_day(DAY1), settings)


def test_rerun_of_a_day_gives_identical_bytes(settings: Settings) -> None:
    write_landing(SimulatorConfig(rows_per_day=500), Interval.for_day(DAY1), settings.lake_uri)
    _run_day("transactions", DAY1, settings)
    uri = lake.partition_file(settings.lake_uri, "raw", "transactions", DAY1)
    fs, path = lake.filesystem(uri)
    first = fs.cat_file(path)
    _run_day("transactions", DAY1, settings)
    assert fs.cat_file(path) == first
    table = lake.read_file(uri)
    assert table.num_rows == len(set(table["transaction_id"].to_pylist()))
