"""Missing history is an error: the feature job never computes on an incomplete look-back."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.schemas import LABELS, TRANSACTIONS
from driftline.core.settings import Settings
from driftline.data.features import (
    DATASET,
    MissingHistoryError,
    build_features,
    compute_interval,
    lookback_days,
)
from driftline.data.reference import compute_features_reference
from driftline.simulator import SimulatorConfig
from tests.lakes import publish_days

pytestmark = pytest.mark.slow
SPAN = Interval.parse("2026-01-01", "2026-01-07")


@pytest.fixture
def published(settings: Settings) -> Settings:
    """Validated raw partitions of 2026-01-01 .. 2026-01-06 (data starts 2026-01-01)."""
    publish_days(settings, SPAN, SimulatorConfig(rows_per_day=400, fraud_rate=0.05))
    return settings


def test_lookback_days_are_the_interval_and_14_days_before_from_data_start() -> None:
    interval = Interval.parse("2026-01-20", "2026-01-22")
    assert lookback_days(interval) == [date(2026, 1, d) for d in range(6, 22)]
    assert lookback_days(interval, date(2026, 1, 18)) == [date(2026, 1, d) for d in range(18, 22)]
    # The interval's own days are always needed, even before the declared first day.
    assert lookback_days(interval, date(2026, 2, 1)) == [date(2026, 1, 20), date(2026, 1, 21)]


def test_a_missing_lookback_day_fails_naming_days_and_datasets(published: Settings) -> None:
    lake.remove_partition(published.lake_uri, "raw", "transactions", date(2026, 1, 3))
    for day in (3, 4):
        lake.remove_partition(published.lake_uri, "raw", "labels", date(2026, 1, day))

    with pytest.raises(MissingHistoryError) as failed:
        build_features(Interval.for_day("2026-01-06"), published)

    assert failed.value.missing == {
        "transactions": [date(2026, 1, 3)],
        "labels": [date(2026, 1, 3), date(2026, 1, 4)],
    }
    message = str(failed.value)
    assert "raw transactions: 2026-01-03 (1 day)" in message
    assert "raw labels: 2026-01-03..2026-01-04 (2 days)" in message
    assert "DRIFTLINE_DATA_START" in message and "ingest" in message
    features = lake.partition_uri(published.lake_uri, "features", DATASET, date(2026, 1, 6))
    assert not lake.exists(features)


def test_the_interval_itself_must_be_ingested(published: Settings) -> None:
    with pytest.raises(MissingHistoryError, match=r"raw transactions: 2026-01-07 \(1 day\)"):
        build_features(Interval.for_day("2026-01-07"), published)


def test_without_a_declared_data_start_every_lookback_day_is_required(
    published: Settings,
) -> None:
    undeclared = published.model_copy(update={"data_start": None})
    with pytest.raises(MissingHistoryError) as failed:
        build_features(Interval.for_day("2026-01-03"), undeclared)
    assert failed.value.missing["transactions"] == [date(2025, 12, d) for d in range(20, 32)]
    assert "2025-12-20..2025-12-31 (12 days)" in str(failed.value)


def test_days_before_data_start_are_never_read(published: Settings) -> None:
    """A later declared start gives the features of exactly the declared history."""
    later = published.model_copy(update={"data_start": date(2026, 1, 3)})
    interval = Interval.for_day("2026-01-04")
    got = compute_interval(interval, later).to_pandas()

    days = [date(2026, 1, 3), date(2026, 1, 4)]
    tx = lake.read_partitions(later.lake_uri, "raw", "transactions", days, TRANSACTIONS)
    labels = lake.read_partitions(later.lake_uri, "raw", "labels", days, LABELS)
    expected = compute_features_reference(tx, labels, interval).to_pandas()
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-9)
    # 2026-01-01 and 01-02 exist but lie before the data start: read, they would count.
    everything = [date(2026, 1, d) for d in range(1, 5)]
    all_tx = lake.read_partitions(later.lake_uri, "raw", "transactions", everything, TRANSACTIONS)
    all_labels = lake.read_partitions(later.lake_uri, "raw", "labels", everything, LABELS)
    full = compute_features_reference(all_tx, all_labels, interval).to_pandas()
    assert full["user_txn_count_7d"].sum() > got["user_txn_count_7d"].sum()
