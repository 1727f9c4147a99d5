"""Feast materialization: exactly the interval, reruns rewrite, never back in time."""

from __future__ import annotations

import pandas as pd
import pytest

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.feast import (
    FEATURE_SERVICE,
    get_store,
    latest_per_entity,
    materialize_interval,
    read_online,
)
from driftline.data.features import DATASET, USER_FEATURES
from driftline.simulator import SimulatorConfig
from tests.lakes import LakeTemplates

pytestmark = pytest.mark.slow
DAY1, DAY3 = Interval.parse("2026-01-02"), Interval.parse("2026-01-04")


@pytest.fixture
def featured(settings: Settings, lake_templates: LakeTemplates) -> Settings:
    """Three days of published features (2026-01-02 .. 2026-01-04), a copy per test."""
    return lake_templates.copy(
        settings, Interval.parse("2026-01-01", "2026-01-05"), SimulatorConfig(rows_per_day=800)
    )


def _latest_offline(settings: Settings, interval: Interval) -> pd.DataFrame:
    [day] = list(interval.days())
    table = lake.read_file(lake.partition_file(settings.lake_uri, "features", DATASET, day))
    return latest_per_entity(table, "user_id").to_pandas().set_index("user_id")


def _online(settings: Settings, users: list[int]) -> pd.DataFrame:
    rows = [{"user_id": u, "merchant_id": 0} for u in users]
    return pd.DataFrame(read_online(rows, settings)).set_index("user_id")


def test_out_of_order_backfill_keeps_newer_values(featured: Settings) -> None:
    materialize_interval(DAY3, featured)
    late = materialize_interval(DAY1, featured)  # a backfill of an older day

    newest, oldest = _latest_offline(featured, DAY3), _latest_offline(featured, DAY1)
    both = sorted(set(newest.index) & set(oldest.index))
    only_old = sorted(set(oldest.index) - set(newest.index))
    assert both and only_old
    assert late.skipped_older["user_activity"] >= len(both)
    online = _online(featured, both + only_old)
    for column in USER_FEATURES:
        assert online.loc[both, column].tolist() == pytest.approx(newest.loc[both, column].tolist())
        assert online.loc[only_old, column].tolist() == pytest.approx(
            oldest.loc[only_old, column].tolist()
        )


def test_online_values_equal_offline_and_rerun_rewrites_the_same(featured: Settings) -> None:
    first = materialize_interval(DAY3, featured)
    offline = _latest_offline(featured, DAY3)
    users = offline.index[:25].tolist()
    online = _online(featured, users)
    for column in USER_FEATURES:
        assert online.loc[users, column].tolist() == pytest.approx(
            offline.loc[users, column].tolist()
        )

    again = materialize_interval(DAY3, featured)  # same event times: rewritten, not skipped
    assert first.written["user_activity"] == len(offline)
    assert again.written == again.replaced == first.written
    assert again.skipped_older == {"user_activity": 0, "merchant_risk": 0}
    assert _online(featured, users).equals(online)


def test_point_in_time_training_join_through_feast(featured: Settings) -> None:
    """get_historical_features returns the row as of the entity timestamp, not later."""
    offline = lake.read_file(
        lake.partition_file(featured.lake_uri, "features", DATASET, next(DAY3.days()))
    ).to_pandas()
    user = offline["user_id"].value_counts().index[0]
    rows = offline[offline.user_id == user].sort_values("event_timestamp")
    first, second = rows.iloc[0], rows.iloc[1]
    just_before_second = second.event_timestamp - pd.Timedelta(microseconds=1)
    store = get_store(featured)
    materialize_interval(DAY3, featured)  # applies the definitions
    entity_df = pd.DataFrame(
        {
            "user_id": [user],
            "merchant_id": [int(first.merchant_id)],
            "event_timestamp": [just_before_second],
        }
    )
    got = store.get_historical_features(
        entity_df=entity_df, features=store.get_feature_service(FEATURE_SERVICE)
    ).to_df()
    assert got.loc[0, "user_txn_count_7d"] == first.user_txn_count_7d
    assert got.loc[0, "user_amount_sum_24h"] == pytest.approx(first.user_amount_sum_24h)
