"""A model restricted to a subset of the input contract (``inputs``) reads nothing else.

The scenario-matrix benchmark trains the day-old feature set (the contract without the
fresh features) from the same training set as the full one through this argument.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftline.core.columns import MODEL_INPUTS
from driftline.training.model import DERIVED, ModelConfig, Preprocessor
from driftline.training.synthetic import model_frame
from driftline.training.trainer import train_model
from driftline.training.tuning import tune

#: Two inputs the synthetic card-testing fraud is recognisable by.
DROPPED = ("user_txn_count_1h", "channel")
INPUTS = tuple(name for name in MODEL_INPUTS if name not in DROPPED)
FAST = ModelConfig(batch_size=256, max_epochs=2)


@pytest.fixture(scope="module")
def splits() -> tuple[pd.DataFrame, pd.DataFrame]:
    """A time-ordered train / valid split of a small synthetic frame."""
    frame = model_frame(3000, seed=5)
    return frame.iloc[:2400].reset_index(drop=True), frame.iloc[2400:].reset_index(drop=True)


def _scrambled(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with the dropped inputs replaced by other values."""
    out = frame.copy()
    out["user_txn_count_1h"] = np.arange(len(out), dtype=float) % 17
    out["channel"] = "pos"
    return out


def test_the_preprocessor_keeps_only_the_given_inputs_and_the_derived_ones(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, _ = splits
    full, restricted = Preprocessor.fit(train), Preprocessor.fit(train, inputs=INPUTS)

    names = {s.name for s in restricted.numeric} | {v.name for v in restricted.categorical}
    assert names == (set(INPUTS) | set(DERIVED))
    assert {s.name for s in full.numeric} - {s.name for s in restricted.numeric} == {DROPPED[0]}
    assert restricted.n_numeric == full.n_numeric - 2  # the value and its missing flag
    assert Preprocessor.from_dict(restricted.to_dict()) == restricted


def test_a_restricted_model_ignores_the_dropped_inputs(
    splits: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    train, valid = splits
    full = train_model(FAST, train, valid, seed=0, device="cpu")
    restricted = train_model(FAST, train, valid, seed=0, device="cpu", inputs=INPUTS)

    scrambled = _scrambled(valid)
    np.testing.assert_array_equal(
        restricted.predict_proba(valid), restricted.predict_proba(scrambled)
    )
    assert not np.array_equal(full.predict_proba(valid), full.predict_proba(scrambled))


def test_tuning_passes_the_inputs_to_every_trial(
    splits: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    train, valid = splits

    def trials(inputs: tuple[str, ...], name: str) -> dict[str, Any]:
        summary: dict[str, Any] = tune(
            name,
            train,
            valid,
            n_trials=1,
            storage_url=f"sqlite:///{tmp_path}/optuna.db",
            seed=0,
            max_epochs=1,
            device="cpu",
            inputs=inputs,
        )
        return summary

    assert trials(INPUTS, "restricted")["n_complete"] == 1
    assert trials(("amount",), "refused")["n_failed"] == 1  # the trial saw the inputs


@pytest.mark.parametrize(
    ("inputs", "message"),
    [
        ((*MODEL_INPUTS, "label"), "outside MODEL_INPUTS: ['label']"),
        (tuple(n for n in MODEL_INPUTS if n != "user_amount_mean_7d"), "must keep"),
    ],
)
def test_inputs_outside_the_contract_or_without_the_derived_bases_are_refused(
    splits: tuple[pd.DataFrame, pd.DataFrame], inputs: tuple[str, ...], message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Preprocessor.fit(splits[0], inputs=inputs)
