"""Training sets: point-in-time features from Feast, fresh features as of each transaction,
labels as of the cut-off, time splits.

Data starts on 2026-01-01 (the session's ``DRIFTLINE_DATA_START``); the window starts on
2026-01-16, after the first day whose 14-day look-back features are complete."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from driftline.core import lake
from driftline.core.columns import LABEL, MODEL_INPUTS
from driftline.core.feature_spec import FRESH_FEATURES
from driftline.core.interval import Interval
from driftline.core.schemas import LABELS
from driftline.core.settings import Settings, get_settings
from driftline.data.features import DATASET, FEATURES, MERCHANT_FEATURES, USER_FEATURES
from driftline.data.fresh import read_fresh_features
from driftline.simulator import SimulatorConfig
from driftline.training.dataset import (
    SPLITS,
    TrainingSetError,
    build_training_set,
    load_manifest,
    load_split,
)
from tests.lakes import populate_lake

pytestmark = pytest.mark.slow
SPAN = Interval.parse("2026-01-01", "2026-01-23")
WINDOW = Interval.parse("2026-01-16", "2026-01-23")


@pytest.fixture(scope="module")
def lake_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """22 simulated days through the real gate and feature job; short splits."""
    root = tmp_path_factory.mktemp("training_set")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLINE_HOME", str(root / "state"))
        patch.setenv("DRIFTLINE_LABEL_MATURITY_DAYS", "3")
        patch.setenv("DRIFTLINE_VALID_DAYS", "1")
        patch.setenv("DRIFTLINE_HOLDOUT_DAYS", "1")
        get_settings.cache_clear()
        settings = get_settings()
        populate_lake(settings, SPAN, SimulatorConfig(rows_per_day=1000, fraud_rate=0.03))
        yield settings
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def built(lake_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("set")
    build_training_set(WINDOW, out, lake_settings)
    return out


def _all(directory: Path) -> pd.DataFrame:
    return pd.concat([load_split(directory, s).assign(split=s) for s in SPLITS])


def test_splits_follow_time_and_leave_immature_days_out(built: Path) -> None:
    manifest = load_manifest(built)
    assert manifest["splits"] == {
        "train": "[2026-01-16, 2026-01-18)",
        "valid": "[2026-01-18, 2026-01-19)",
        "holdout": "[2026-01-19, 2026-01-20)",
    }
    frame = _all(built)
    ends = frame.groupby("split")["event_timestamp"].agg(["min", "max"])
    assert ends.loc["train", "max"] < ends.loc["valid", "min"]
    assert ends.loc["valid", "max"] < ends.loc["holdout", "min"]
    assert frame["event_timestamp"].max() < pd.Timestamp("2026-01-20", tz="UTC")
    assert set(MODEL_INPUTS) <= set(frame.columns)
    assert frame["transaction_id"].is_unique
    assert manifest["feature_service"] == "fraud_v1" and manifest["feature_service_version"] == "1"


def test_features_are_those_served_for_each_transaction(
    built: Path, lake_settings: Settings
) -> None:
    """Feast's join equals an independent as-of join on the feature partitions, strictly
    before the transaction's day: the state the daily-materialized online store serves."""
    frame = _all(built)
    frame["as_of"] = frame["event_timestamp"].dt.floor("D")
    frame = frame.sort_values("as_of")
    days = list(SPAN.days())
    stored = lake.read_partitions(lake_settings.lake_uri, "features", DATASET, days, FEATURES)
    stored = stored.to_pandas().sort_values("event_timestamp")
    for key, columns, ttl in (
        ("user_id", USER_FEATURES, pd.Timedelta(days=7)),
        ("merchant_id", MERCHANT_FEATURES, pd.Timedelta(days=14)),
    ):
        expected = pd.merge_asof(
            frame[["transaction_id", key, "as_of"]],
            stored[[key, "event_timestamp", *columns]].rename(columns={"event_timestamp": "as_of"}),
            on="as_of",
            by=key,
            allow_exact_matches=False,  # a row at midnight belongs to the new day
            tolerance=ttl,
        ).set_index("transaction_id")
        got = frame.set_index("transaction_id").loc[expected.index]
        for column in columns:
            pd.testing.assert_series_equal(
                got[column].astype("float64"),
                expected[column].astype("float64"),
                check_names=False,
            )
    assert frame["user_txn_count_24h"].isna().any()  # users without history exist
    assert frame["user_txn_count_24h"].notna().mean() > 0.5


def test_labels_are_the_chargebacks_reported_before_the_cutoff(
    built: Path, lake_settings: Settings
) -> None:
    frame = _all(built)
    labels = lake.read_partitions(
        lake_settings.lake_uri, "raw", "labels", SPAN.days(), LABELS
    ).to_pandas()
    reported = set(labels.loc[labels["label_ts"] < WINDOW.end, "transaction_id"])
    assert set(frame.loc[frame[LABEL] == 1, "transaction_id"]) == reported & set(
        frame["transaction_id"]
    )
    assert frame.groupby("split")[LABEL].sum().min() > 0


def test_rebuild_is_identical_and_data_version_tracks_the_partitions(
    built: Path, lake_settings: Settings, tmp_path: Path
) -> None:
    again = build_training_set(WINDOW, tmp_path / "again", lake_settings)
    assert again.data_version == load_manifest(built)["data_version"]
    for split in SPLITS:
        pd.testing.assert_frame_equal(
            load_split(built, split), load_split(tmp_path / "again", split)
        )
    shorter = build_training_set(
        Interval.parse("2026-01-17", "2026-01-23"), tmp_path / "shorter", lake_settings
    )
    assert shorter.data_version != again.data_version


def test_too_short_a_window_is_a_clear_error(lake_settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(TrainingSetError, match="too short: it needs at least 6 days"):
        build_training_set(Interval.parse("2026-01-19", "2026-01-23"), tmp_path, lake_settings)


def test_fresh_features_are_the_offline_values_of_each_transaction(
    built: Path, lake_settings: Settings
) -> None:
    """Every transaction carries its own fresh row (as of just before it), by id."""
    frame = _all(built).set_index("transaction_id")
    offline = read_fresh_features(lake_settings, WINDOW.days()).to_pandas()
    offline = offline.set_index("transaction_id").loc[frame.index]
    for column in FRESH_FEATURES:
        pd.testing.assert_series_equal(
            frame[column], offline[column].astype("float64"), check_names=False
        )
    assert frame["fresh_user_txn_count_24h"].gt(0).mean() > 0.5


def test_a_missing_fresh_day_is_an_error_naming_it(lake_settings: Settings, tmp_path: Path) -> None:
    copy = tmp_path / "state"
    shutil.copytree(Path(lake_settings.lake_uri), copy / "lake")
    settings = lake_settings.model_copy(update={"home": copy, "lake_uri": str(copy / "lake")})
    lake.remove_partition(settings.lake_uri, "features", "fresh", date(2026, 1, 18))
    with pytest.raises(TrainingSetError, match=r"fresh features missing for 1 day.*2026-01-18"):
        build_training_set(WINDOW, tmp_path / "set", settings)
    assert not (tmp_path / "set").exists()


def test_a_window_training_before_the_first_complete_day_is_refused(
    lake_settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(TrainingSetError, match="before 2026-01-15, the first day whose"):
        build_training_set(Interval.parse("2026-01-14", "2026-01-23"), tmp_path, lake_settings)
