"""The offline fresh features: one row per transaction, exact as of just before it.

A small lake (ten simulated days through the real validation gate; no Spark: the fresh
job reads raw transactions only) is enough to check the job against a brute-force
recomputation, its idempotence and its missing-history rule.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from driftline.core import lake
from driftline.core.feature_spec import FRESH_FEATURES, FRESH_SPEC
from driftline.core.fresh import Event, fresh_features
from driftline.core.interval import Interval
from driftline.core.schemas import TRANSACTIONS
from driftline.core.settings import Settings, get_settings
from driftline.data.features import MissingHistoryError
from driftline.data.fresh import (
    DATASET,
    FRESH,
    ZONE,
    MissingFreshFeaturesError,
    build_fresh_features,
    read_fresh_features,
)
from driftline.simulator import SimulatorConfig
from tests.lakes import publish_days

SPAN = Interval.parse("2026-01-01", "2026-01-11")
#: Built in the fixture: the last two days, whose look-back (7 days) is all there.
BUILT = Interval.parse("2026-01-09", "2026-01-11")
#: A small population, so users and merchants have many transactions within a window.
CONFIG = SimulatorConfig(rows_per_day=400, n_users=60, n_merchants=20, fraud_rate=0.03)


@pytest.fixture(scope="module")
def lake_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Ten validated raw days (data starts 2026-01-01), fresh features of the last two."""
    root = tmp_path_factory.mktemp("fresh_offline")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLINE_HOME", str(root / "state"))
        get_settings.cache_clear()
        settings = get_settings()
        publish_days(settings, SPAN, CONFIG)
        build_fresh_features(BUILT, settings)
        yield settings
    get_settings.cache_clear()


def _raw(settings: Settings, days: Interval) -> pd.DataFrame:
    table = lake.read_partitions(
        settings.lake_uri, "raw", "transactions", days.days(), TRANSACTIONS
    )
    return table.to_pandas()


def _fresh_file(settings: Settings, day: date) -> Path:
    return Path(lake.partition_file(settings.lake_uri, ZONE, DATASET, day))


def test_one_row_per_transaction_with_the_spec_dtypes(lake_settings: Settings) -> None:
    for day in BUILT.days():
        table = lake.read_file(str(_fresh_file(lake_settings, day)))
        assert table.schema == FRESH
        assert [table.schema.field(f.name).type for f in FRESH_SPEC] == [
            pa.int64() if f.dtype == "int64" else pa.float64() for f in FRESH_SPEC
        ]
        ids = table["transaction_id"].to_pylist()
        raw = _raw(lake_settings, Interval.for_day(day))
        assert len(ids) == len(set(ids)) == len(raw) > 300
        assert set(ids) == set(raw["transaction_id"])


def test_every_value_lies_in_its_spec_domain(lake_settings: Settings) -> None:
    table = read_fresh_features(lake_settings, BUILT.days()).to_pandas()
    for feature in FRESH_SPEC:
        column = table[feature.name]
        assert column.notna().all(), feature.name
        if feature.minimum is not None:
            assert column.min() >= feature.minimum, feature.name
        if feature.maximum is not None:
            assert column.max() <= feature.maximum, feature.name


def _naive_events(frame: pd.DataFrame) -> list[Event]:
    """Events from raw rows, built here independently of the job's conversion."""
    return [
        Event(
            ts_us=int(row.ts.value // 1000),
            transaction_id=row.transaction_id,
            user_id=int(row.user_id),
            merchant_id=int(row.merchant_id),
            amount=float(row.amount),
            device_id=None if pd.isna(row.device_id) else row.device_id,
            country=None if pd.isna(row.merchant_country) else row.merchant_country,
        )
        for row in frame.itertuples(index=False)
    ]


def test_values_equal_a_brute_force_recomputation_from_every_lake_event(
    lake_settings: Settings,
) -> None:
    """For a sample of rows: ``fresh_features`` handed *all* of the entity's events in the
    lake (every day, later ones too, unsorted), not the job's sorted slices."""
    events = _naive_events(_raw(lake_settings, SPAN))
    by_id = {e.transaction_id: e for e in events}
    table = read_fresh_features(lake_settings, BUILT.days()).to_pandas()
    sample = table.sample(n=150, random_state=3)
    random.Random(5).shuffle(events)
    nonzero = dict.fromkeys(FRESH_FEATURES, 0)
    for row in sample.itertuples(index=False):
        txn = by_id[row.transaction_id]
        users = [e for e in events if e.user_id == txn.user_id]
        merchants = [e for e in events if e.merchant_id == txn.merchant_id]
        expected = fresh_features(txn, users, merchants)
        for name in FRESH_FEATURES:
            assert getattr(row, name) == pytest.approx(expected[name], rel=1e-12), (
                f"{row.transaction_id} {name}"
            )
            nonzero[name] += bool(expected[name])
    # The sample exercises every feature (none is trivially zero everywhere).
    assert all(count > 0 for count in nonzero.values()), nonzero


def test_velocity_counts_equal_a_pandas_count_of_earlier_transactions(
    lake_settings: Settings,
) -> None:
    """Independent of ``fresh_features``: the user's earlier transactions in (t - 24h, t)."""
    raw = _raw(lake_settings, SPAN).sort_values(["ts", "transaction_id"])
    table = read_fresh_features(lake_settings, BUILT.days()).to_pandas()
    for row in table.sample(n=100, random_state=1).itertuples(index=False):
        user = raw[raw["user_id"] == row.user_id]
        earlier = (user["ts"] < row.event_timestamp) | (
            (user["ts"] == row.event_timestamp) & (user["transaction_id"] < row.transaction_id)
        )
        inside = user["ts"] > row.event_timestamp - pd.Timedelta(hours=24)
        assert row.fresh_user_txn_count_24h == int((earlier & inside).sum())
        amounts = user.loc[earlier & inside, "amount"]
        assert row.fresh_user_amount_sum_24h == pytest.approx(float(amounts.sum()), rel=1e-9)


def test_rerunning_a_day_rewrites_the_same_bytes(lake_settings: Settings) -> None:
    day = BUILT.start.date()
    path = _fresh_file(lake_settings, day)
    before = path.read_bytes()
    result = build_fresh_features(Interval.for_day(day), lake_settings)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert not [p for p in path.parent.parent.iterdir() if p.name.startswith(".")]
    assert result.rows == {day.isoformat(): lake.read_file(str(path)).num_rows}


def test_days_before_data_start_are_not_needed_but_later_ones_are(
    lake_settings: Settings, tmp_path: Path
) -> None:
    home = tmp_path / "state"
    shutil.copytree(lake_settings.home, home)
    settings = lake_settings.model_copy(update={"home": home, "lake_uri": str(home / "lake")})
    # 2026-01-02 looks back to 2025-12-26; data starts 2026-01-01, so only 01-01 is needed.
    assert build_fresh_features(Interval.for_day("2026-01-02"), settings).rows["2026-01-02"] > 0
    undeclared = settings.model_copy(update={"data_start": None})
    with pytest.raises(MissingHistoryError, match=r"2025-12-26\.\.2025-12-31 \(6 days\)"):
        build_fresh_features(Interval.for_day("2026-01-02"), undeclared)

    lake.remove_partition(settings.lake_uri, "raw", "transactions", date(2026, 1, 5))
    before = _fresh_file(settings, date(2026, 1, 10)).read_bytes()
    with pytest.raises(MissingHistoryError, match=r"raw transactions: 2026-01-05 \(1 day\)") as e:
        build_fresh_features(Interval.for_day("2026-01-10"), settings)
    assert e.value.missing == {"transactions": [date(2026, 1, 5)]}
    assert _fresh_file(settings, date(2026, 1, 10)).read_bytes() == before  # nothing written


def test_reading_a_day_without_fresh_features_is_an_error(lake_settings: Settings) -> None:
    with pytest.raises(MissingFreshFeaturesError, match="2026-01-07, 2026-01-08") as e:
        read_fresh_features(lake_settings, Interval.parse("2026-01-07", "2026-01-11").days())
    assert e.value.missing == [date(2026, 1, 7), date(2026, 1, 8)]
