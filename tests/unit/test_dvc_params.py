"""dvc.yaml and params.yaml agree on the first day of data, and the window is trainable.

Fast: the two YAML files and the training plan only (no DVC, no data). The full
``dvc repro`` is ``tests/e2e/test_dvc_repro.py``.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.training.dataset import TrainingSetError, plan_splits, require_complete_history
from tests.conftest import REPO

#: The stages that read history: each runs with the data start declared.
HISTORY_STAGES = ("features", "train", "evaluate")
DATA_START = "DRIFTLINE_DATA_START=${ingest.start}"


def _yaml(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((REPO / name).read_text(encoding="utf-8"))
    return data


@pytest.mark.parametrize("stage", HISTORY_STAGES)
def test_history_stages_declare_the_one_data_start(stage: str) -> None:
    spec = _yaml("dvc.yaml")["stages"][stage]
    assert str(spec["cmd"]).startswith(DATA_START), spec["cmd"]
    assert "ingest.start" in spec["params"] or "ingest" in spec["params"]  # reruns on a change


def test_no_stage_sets_another_data_start() -> None:
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    assert text.count("DRIFTLINE_DATA_START=") == text.count(DATA_START) == len(HISTORY_STAGES)


def test_the_train_window_is_accepted_with_that_data_start(tmp_path: Path) -> None:
    """The defaults' window starts no earlier than the first day of complete features."""
    params = _yaml("params.yaml")
    start = date.fromisoformat(params["ingest"]["start"])
    assert date.fromisoformat(params["simulate"]["start"]) <= start
    assert date.fromisoformat(params["features"]["start"]) > start
    train = params["train"]
    window = Interval.parse(train["start"], train["end"])
    settings = Settings(home=tmp_path, data_start=start)
    plan = plan_splits(window, settings)  # the default maturity, validation and holdout days
    require_complete_history(window, plan, settings)
    assert plan.train.end > plan.train.start
    assert window.end <= Interval.parse(params["features"]["start"], params["ingest"]["end"]).end
    # A day earlier would train on incomplete look-back features: refused.
    earlier = Interval(window.start - timedelta(days=1), window.end)
    with pytest.raises(TrainingSetError, match="look-back features are complete"):
        require_complete_history(earlier, plan_splits(earlier, settings), settings)
