"""The lean serving form scores like the pyfunc: NumPy preprocessing, TorchScript module.

Real models (both families) are trained on synthetic frames; the lean form is exported,
loaded back and compared with ``TrainedModel.predict_proba`` (what the registered
pyfunc's ``predict`` calls) on holdout rows plus hostile ones: missing and infinite
values, negative amounts, unseen categories. The registered round trip through MLflow
is in ``tests/integration/test_fallback_chain.py``.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftline.core.columns import CATEGORICAL, FRESH_NUMERIC, MODEL_INPUTS, STORE_NUMERIC
from driftline.serving.batching import MicroBatcher
from driftline.training import lean
from driftline.training.model import ModelConfig
from driftline.training.trainer import TrainedModel, train_model
from tests.frames import model_frame


@pytest.fixture(scope="module", params=["mlp", "dcn"])
def trained(request: pytest.FixtureRequest) -> tuple[TrainedModel, pd.DataFrame]:
    """A small model of each family and holdout rows it never saw."""
    frame = model_frame(n=2400, seed=5)
    config = ModelConfig(family=request.param, max_epochs=2, batch_size=256)
    model = train_model(config, frame[:1600], frame[1600:2000], seed=1, device="cpu")
    return model, frame[2000:].reset_index(drop=True)


def hostile(rows: pd.DataFrame) -> pd.DataFrame:
    """Rows that exercise every preprocessing branch the holdout may not."""
    odd = rows.head(12).copy()
    odd.loc[0:2, [*STORE_NUMERIC, *FRESH_NUMERIC]] = np.nan  # no history; fresh fallback
    odd.loc[3, "user_amount_mean_7d"] = np.inf
    odd.loc[4, "user_amount_max_24h"] = -np.inf
    odd.loc[5, "user_amount_mean_7d"] = 0.0  # ratio to a zero mean: missing
    odd.loc[6, "amount"] = 1e9  # clipped
    odd.loc[7, "user_seconds_since_prev_txn"] = -3.0  # signed log of a negative
    for name in CATEGORICAL:
        odd.loc[8, name] = "never-seen"
        odd.loc[9, name] = None
    return odd


def test_array_preprocessor_equals_the_pandas_one_bit_for_bit(
    trained: tuple[TrainedModel, pd.DataFrame],
) -> None:
    model, holdout = trained
    rows = pd.concat([holdout, hostile(holdout)], ignore_index=True)
    compiled = lean.ArrayPreprocessor.from_preprocessor(model.preprocessor)

    numeric, categorical = compiled.transform(lean.frame_columns(rows))
    expected_numeric, expected_categorical = model.preprocessor.transform(rows)

    assert numeric.dtype == np.float32 and categorical.dtype == np.int64
    np.testing.assert_array_equal(numeric, expected_numeric.numpy())
    np.testing.assert_array_equal(categorical, expected_categorical.numpy())
    odd = len(holdout)  # the hostile rows follow the holdout
    assert (categorical[odd + 8] == 0).all() and (categorical[odd + 9] == 0).all()
    assert numeric[odd, -1] == 1.0  # a missing feature sets its indicator


def test_exported_lean_model_scores_like_the_pyfunc(
    trained: tuple[TrainedModel, pd.DataFrame], tmp_path: Path
) -> None:
    model, holdout = trained
    diff = lean.export_checked(model, tmp_path / "lean", holdout)
    loaded = lean.load(tmp_path / "lean")
    rows = pd.concat([holdout, hostile(holdout)], ignore_index=True)

    scores = loaded.predict_columns(lean.frame_columns(rows))
    expected = model.predict_proba(rows)

    assert diff <= lean.TOLERANCE
    assert scores.dtype == np.float64 and scores.shape == (len(rows),)
    assert np.max(np.abs(scores - expected)) <= lean.TOLERANCE
    # Row by row (the serving path's usual batch of one) it agrees too.
    for i in (0, 5, len(holdout) + 3, len(holdout) + 8, len(rows) - 1):
        one = loaded.predict_columns(lean.frame_columns(rows.iloc[[i]]))
        assert abs(one[0] - expected[i]) <= lean.TOLERANCE
    assert sorted(p.name for p in (tmp_path / "lean").iterdir()) == [
        lean.MANIFEST_FILE,
        lean.MODULE_FILE,
        lean.PREPROCESSOR_FILE,
    ]


def test_an_export_outside_the_tolerance_is_refused_and_writes_nothing(
    trained: tuple[TrainedModel, pd.DataFrame], tmp_path: Path
) -> None:
    model, holdout = trained
    # No lean form can be closer than -1: the check must refuse rather than write.
    with pytest.raises(lean.LeanMismatchError, match="not registering"):
        lean.export_checked(model, tmp_path / "lean", holdout, tolerance=-1.0)
    assert not (tmp_path / "lean").exists()


def test_micro_batching_merges_concurrent_rows_into_one_pass_with_the_same_scores(
    trained: tuple[TrainedModel, pd.DataFrame], tmp_path: Path
) -> None:
    model, holdout = trained
    lean.export_checked(model, tmp_path / "lean", holdout)
    loaded = lean.load(tmp_path / "lean")
    rows = [lean.frame_columns(holdout.iloc[[i]]) for i in range(8)]
    alone = [loaded.predict_columns(r)[0] for r in rows]
    # A long window: the batch closes when every announced request has submitted.
    batcher = MicroBatcher("champion", window_seconds=5.0, max_rows=64)
    results: dict[int, float] = {}
    announced = threading.Barrier(len(rows))

    def request(i: int) -> None:
        batcher.announce()
        announced.wait()  # all eight are on their way before any reaches the model
        results[i] = float(batcher.predict(loaded, rows[i], 1)[0])

    threads = [threading.Thread(target=request, args=(i,)) for i in range(len(rows))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    batcher.close()

    assert batcher.passes == 1  # eight requests, one forward pass
    assert batcher.merged_requests == len(rows)
    np.testing.assert_allclose([results[i] for i in range(len(rows))], alone, rtol=0, atol=1e-6)


def test_a_lone_request_is_scored_on_its_own_thread_without_waiting() -> None:
    calls: list[str] = []

    class Recorder:
        def predict_columns(self, columns: lean.Columns) -> np.ndarray:
            calls.append(threading.current_thread().name)
            return np.full(len(columns["amount"]), 0.25)

    batcher = MicroBatcher("champion", window_seconds=60.0, max_rows=64)
    batcher.announce()
    columns = {name: [1.0] for name in MODEL_INPUTS}
    assert batcher.predict(Recorder(), columns, 1).tolist() == [0.25]
    assert calls == [threading.current_thread().name]  # no hand-off, no 60 s window
