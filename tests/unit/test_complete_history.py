"""No model trains on days whose look-back features are incomplete (one rule, two users)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.features import first_complete_day
from driftline.monitoring.steps import training_window_start
from driftline.training.dataset import TrainingSetError, build_training_set

START = date(2026, 1, 1)


def _settings(tmp_path: Path, data_start: date | None = START) -> Settings:
    return Settings(
        home=tmp_path / "state",
        data_start=data_start,
        label_maturity_days=3,
        valid_days=1,
        holdout_days=1,
        retrain_window_days=21,
    )


def test_the_first_complete_day_is_data_start_plus_the_longest_look_back(
    tmp_path: Path,
) -> None:
    assert first_complete_day(_settings(tmp_path)) == date(2026, 1, 15)  # 14 days > 7 days
    assert first_complete_day(_settings(tmp_path, None)) is None


def test_a_window_training_before_it_is_refused_naming_the_day(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    with pytest.raises(TrainingSetError, match="trains from 2026-01-14, before 2026-01-15") as e:
        build_training_set(Interval.parse("2026-01-14", "2026-01-30"), tmp_path / "set", settings)
    assert "Start the window on 2026-01-15 or later" in str(e.value)
    assert not (tmp_path / "set").exists()


@pytest.mark.parametrize("data_start", [START, None], ids=["from-the-first-complete-day", "none"])
def test_a_window_from_the_first_complete_day_passes_the_rule(
    tmp_path: Path, data_start: date | None
) -> None:
    """It gets as far as reading the (here empty) lake: the next error is about data."""
    settings = _settings(tmp_path, data_start)
    with pytest.raises(TrainingSetError, match="no raw transactions"):
        build_training_set(Interval.parse("2026-01-15", "2026-01-30"), tmp_path / "s", settings)


def test_retrain_windows_start_where_the_training_set_accepts_them(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for end in (date(2026, 1, 26), date(2026, 2, 20)):
        start = training_window_start(end, settings)
        assert start >= date(2026, 1, 15)
        with pytest.raises(TrainingSetError, match="no raw transactions"):
            build_training_set(Interval.parse(start, end), tmp_path / "s", settings)
