"""The Spark feature job: same rows as the single-process reference, no leakage."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pyarrow as pa
import pytest

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.schemas import LABELS, TRANSACTIONS
from driftline.core.settings import Settings
from driftline.data import fresh
from driftline.data.errors import BatchQuarantined
from driftline.data.features import FEATURES, build_features, compute_features, to_canonical
from driftline.data.reference import compute_features_reference
from driftline.data.spark import get_spark
from driftline.simulator import SimulatorConfig
from tests.lakes import publish_days

pytestmark = pytest.mark.slow
T0 = datetime(2026, 1, 5, tzinfo=UTC)


def _publish_days(settings: Settings, interval: Interval) -> None:
    publish_days(settings, interval, SimulatorConfig(rows_per_day=1500, fraud_rate=0.03))


def _negative_first_count(
    real: Callable[[Interval, Settings], tuple[dict[date, pa.Table], int]],
) -> Callable[[Interval, Settings], tuple[dict[date, pa.Table], int]]:
    """``real`` with the last day's first fresh 1 h count set to -1 (fails its suite)."""

    def corrupted(interval: Interval, settings: Settings) -> tuple[dict[date, pa.Table], int]:
        tables, events = real(interval, settings)
        last = max(tables)
        column = "fresh_merchant_txn_count_1h"
        values = tables[last][column].to_pylist()
        values[0] = -1
        index = tables[last].schema.get_field_index(column)
        field = tables[last].schema.field(column)
        tables[last] = tables[last].set_column(index, field, pa.array(values, field.type))
        return tables, events

    return corrupted


def test_spark_job_equals_reference_on_simulated_days(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    _publish_days(settings, Interval.parse("2026-01-01", "2026-01-05"))
    interval = Interval.parse("2026-01-03", "2026-01-05")
    # A fresh-feature day failing its suite stops the stage before either set publishes.
    with monkeypatch.context() as patched:
        patched.setattr(fresh, "compute_fresh_interval", _negative_first_count(
            fresh.compute_fresh_interval
        ))  # fmt: skip
        with pytest.raises(BatchQuarantined, match="fresh_merchant_txn_count_1h"):
            build_features(interval, settings)
    for day in interval.days():
        for zone, dataset in (("features", "features"), (fresh.ZONE, fresh.DATASET)):
            assert not lake.exists(lake.partition_file(settings.lake_uri, zone, dataset, day))
    result = build_features(interval, settings)

    days = [date(2026, 1, d) for d in range(1, 5)]
    tx = lake.read_partitions(settings.lake_uri, "raw", "transactions", days, TRANSACTIONS)
    labels = lake.read_partitions(settings.lake_uri, "raw", "labels", days, LABELS)
    expected = compute_features_reference(tx, labels, interval).to_pandas()
    published = pa.concat_tables(
        [lake.read_file(f"{p}/part-0.parquet") for p in result.partitions]
    ).to_pandas()

    assert len(published) == sum(result.rows.values()) > 2000
    pd.testing.assert_frame_equal(published, expected, check_exact=False, rtol=1e-9)
    assert published["merchant_fraud_reports_14d"].sum() > 0  # labels really flow in
    assert published["user_new_device"].sum() > 0


def _tx(rows: list[tuple[str, int, int, datetime, float, str]]) -> pa.Table:
    return pa.table(
        {
            "transaction_id": [r[0] for r in rows],
            "ts": [r[3] for r in rows],
            "user_id": [r[1] for r in rows],
            "card_id": [r[1] for r in rows],
            "merchant_id": [r[2] for r in rows],
            "merchant_category": ["grocery"] * len(rows),
            "merchant_country": ["DE"] * len(rows),
            "amount": [r[4] for r in rows],
            "currency": ["EUR"] * len(rows),
            "channel": ["pos"] * len(rows),
            "device_id": [r[5] for r in rows],
        },
        schema=TRANSACTIONS,
    )


def test_point_in_time_correctness_on_hand_built_example() -> None:
    """Counts use only the past; a chargeback counts only once it is reported."""
    tx = _tx(
        [
            ("a", 1, 9, T0 - timedelta(hours=2), 10.0, "d1"),  # outside 1h of "c"
            ("b", 1, 9, T0 - timedelta(minutes=30), 20.0, "d1"),
            ("c", 1, 9, T0, 30.0, "d2"),
            ("d", 1, 9, T0 + timedelta(minutes=10), 40.0, "d2"),  # future of "c"
            ("e", 2, 9, T0 + timedelta(hours=5), 5.0, "d3"),
        ]
    )
    labels = pa.table(
        {
            "transaction_id": ["a", "b"],
            "user_id": [1, 1],
            "merchant_id": [9, 9],
            "transaction_ts": [T0 - timedelta(hours=2), T0 - timedelta(minutes=30)],
            # "a" is reported one hour after "c" happened, "b" before "e".
            "label_ts": [T0 + timedelta(hours=1), T0 + timedelta(hours=4)],
            "is_fraud": [1, 1],
        },
        schema=LABELS,
    )
    interval = Interval.for_day(T0.date())
    spark = get_spark()
    got = (
        to_canonical(
            compute_features(
                spark.createDataFrame(tx), spark.createDataFrame(labels), interval
            ).toArrow()
        )
        .to_pandas()
        .set_index("transaction_id")
    )
    assert got.loc["c", "user_txn_count_1h"] == 2  # b and c, not a (2h ago), not d (future)
    assert got.loc["c", "user_txn_count_24h"] == 3
    assert got.loc["c", "user_new_device"] == 1 and got.loc["d", "user_new_device"] == 0
    assert got.loc["c", "user_seconds_since_prev_txn"] == 1800.0
    assert got.loc["c", "merchant_fraud_reports_14d"] == 0  # nothing reported yet at T0
    assert got.loc["d", "merchant_fraud_reports_14d"] == 0
    assert got.loc["e", "merchant_fraud_reports_14d"] == 2  # both known 5h later
    assert got.loc["c", "user_amount_mean_7d"] == pytest.approx(20.0)
    assert list(got.columns) == FEATURES.names[1:]
    reference = compute_features_reference(tx, labels, interval).to_pandas()
    pd.testing.assert_frame_equal(got.reset_index(), reference, check_exact=False, rtol=1e-9)
