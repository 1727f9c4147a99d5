"""Tests of driftline.training.evaluate: metrics, latency, curves, behavioural checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftline.core.columns import LABEL
from driftline.training.evaluate import (
    MAX_CURVE_POINTS,
    batch_latency,
    behavioural_checks,
    evaluate_model,
    recall_at_fpr,
    risky_examples,
    score_metrics,
    write_curves,
)
from tests.frames import model_frame

# Four rows small enough to work out by hand (scores sorted: .8+ .4- .35+ .1-).
Y = np.array([0, 0, 1, 1])
S = np.array([0.1, 0.4, 0.35, 0.8])


def test_score_metrics_match_hand_computed_values() -> None:
    metrics = score_metrics(Y, S)

    # AP: recall steps of 0.5 at precision 1 (0.8) and 2/3 (0.35).
    assert metrics["pr_auc"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # 3 of the 4 positive/negative pairs are ranked correctly.
    assert metrics["roc_auc"] == pytest.approx(0.75)
    assert metrics["brier"] == pytest.approx((0.1**2 + 0.4**2 + 0.65**2 + 0.2**2) / 4)
    # Only the threshold 0.8 flags no negative: recall 1/2.
    assert metrics["recall_at_fpr"] == pytest.approx(0.5)
    assert metrics["max_fpr"] == 0.01
    assert (metrics["rows"], metrics["positives"], metrics["base_rate"]) == (4, 2, 0.5)


def test_recall_at_fpr_takes_the_best_recall_within_the_budget() -> None:
    assert recall_at_fpr(Y, S, 0.0) == pytest.approx(0.5)
    assert recall_at_fpr(Y, S, 0.49) == pytest.approx(0.5)
    assert recall_at_fpr(Y, S, 0.5) == pytest.approx(1.0)
    # 100 negatives, 1% budget: the top negative may be flagged, the second may not.
    y = np.r_[np.zeros(100), np.ones(4)]
    s = np.r_[np.linspace(0, 0.5, 98), 0.95, 0.9, [0.99, 0.92, 0.85, 0.1]]
    assert recall_at_fpr(y, s, 0.01) == pytest.approx(2 / 4)
    assert recall_at_fpr(y, s, 0.02) == pytest.approx(3 / 4)
    assert score_metrics(y, s, max_fpr=0.02)["recall_at_fpr"] == pytest.approx(3 / 4)


def test_score_metrics_rejects_a_single_class() -> None:
    with pytest.raises(ValueError, match="need both classes"):
        score_metrics(np.zeros(5), np.linspace(0, 1, 5))


@pytest.mark.parametrize(
    ("y", "s", "message"),
    [
        ([0, 1, 1], [0.1, 0.2], "3 labels but 2 scores"),
        ([], [], "no rows"),
        ([0, 2], [0.1, 0.2], "0 or 1"),
        ([0, 1], [0.1, np.nan], "NaN"),
    ],
)
def test_score_metrics_rejects_bad_input(y: list[int], s: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        score_metrics(y, s)


def test_batch_latency_warms_up_then_times_full_batches() -> None:
    frame = pd.DataFrame({"amount": np.arange(1000.0)})
    sizes: list[int] = []

    def predict(batch: pd.DataFrame) -> np.ndarray:
        sizes.append(len(batch))
        return np.zeros(len(batch))

    result = batch_latency(predict, frame, batch_size=300, repeats=7)

    assert len(sizes) == 3 + 7  # warm-up calls are not timed
    assert set(sizes) == {300}  # the trailing partial batch is never used
    assert result["latency_batch_rows"] == 300
    assert 0 < result["latency_p50_ms"] <= result["latency_p99_ms"]
    assert result["throughput_rows_per_s"] > 0


def test_evaluate_model_combines_metrics_and_latency() -> None:
    class Scorer:
        def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
            return np.asarray(frame["score"], dtype=float)

    holdout = pd.DataFrame({"score": S, LABEL: Y})
    result = evaluate_model(Scorer(), holdout)

    assert result["pr_auc"] == pytest.approx(0.5 + 1 / 3)
    assert result["latency_batch_rows"] == 4
    assert "latency_p99_ms" in result


def test_write_curves_writes_plots_and_downsampled_csvs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(5000) < 0.1).astype(int)
    scores = np.clip(0.3 * y + rng.random(5000) * 0.7, 0, 1)

    paths = write_curves(y, scores, tmp_path / "plots")

    assert {p.name for p in paths.values()} == {
        "pr_curve.png",
        "pr_curve.csv",
        "calibration.png",
        "calibration.csv",
    }
    for name in ("pr_curve_png", "calibration_png"):
        assert paths[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pr = pd.read_csv(paths["pr_curve_csv"])
    assert list(pr.columns) == ["precision", "recall", "threshold"]
    assert 2 <= len(pr) <= MAX_CURVE_POINTS
    assert pr["threshold"].is_monotonic_increasing
    assert pr["recall"].iloc[0] == 1.0  # the lowest threshold flags every fraud
    calibration = pd.read_csv(paths["calibration_csv"])
    assert list(calibration.columns) == [
        "bin_lower",
        "bin_upper",
        "mean_predicted",
        "fraction_positive",
        "count",
    ]
    assert calibration["count"].sum() == 5000
    assert calibration["fraction_positive"].between(0, 1).all()


def test_risky_examples_are_a_deterministic_subset_of_risky_rows() -> None:
    frame = model_frame(n=3000, seed=3)
    frame["user_distinct_countries_24h"] = 1.0
    frame["user_amount_to_mean_7d"] = 1.0

    chosen = risky_examples(frame, n=50)
    again = risky_examples(frame.sample(frac=1.0, random_state=1), n=50)

    assert len(chosen) == 50
    assert list(chosen.index) == list(range(50))
    risky = (chosen[LABEL] == 1) | (chosen["user_new_device"] >= 1)
    assert risky.all()
    # Rows with both signals come first; order does not depend on the input order.
    both = (chosen[LABEL] == 1) & (chosen["user_new_device"] >= 1)
    assert both.iloc[: int(both.sum())].all()
    pd.testing.assert_frame_equal(chosen, again)


def test_risky_examples_returns_fewer_rows_when_few_are_risky() -> None:
    frame = pd.DataFrame(
        {
            "transaction_id": ["c", "b", "a", "d"],
            "amount": [10.0, 500.0, 20.0, 30.0],
            "user_amount_to_mean_7d": [1.0, 5.0, np.nan, 1.0],
            "user_new_device": [0.0, 0.0, 1.0, 0.0],
        }
    )
    chosen = risky_examples(frame, n=10)
    assert list(chosen["transaction_id"]) == ["a", "b"]


def _examples() -> pd.DataFrame:
    frame = model_frame(n=2000, seed=5)
    return risky_examples(frame, n=120)


def _monotone(frame: pd.DataFrame) -> np.ndarray:
    """Increasing in amount, independent of the other rows."""
    logit = np.log1p(frame["amount"].to_numpy()) - 4 + frame["user_new_device"].fillna(0)
    return np.asarray(1 / (1 + np.exp(-logit)))


def test_behavioural_checks_pass_a_monotone_row_wise_scorer() -> None:
    report = behavioural_checks(_monotone, _examples())

    assert report["passed"] is True
    assert report["rows"] == 120
    assert report["directional_amount_violations"] == 0
    assert report["directional_amount_rate"] == 0.0
    assert report["invariance_max_diff"] == 0.0


def test_behavioural_checks_count_rows_whose_score_drops_with_the_amount() -> None:
    examples = _examples()

    def peaked(frame: pd.DataFrame) -> np.ndarray:
        # Rises up to 100, then falls: larger amounts above 100 look *less* risky.
        amount = frame["amount"].to_numpy()
        return np.where(amount <= 100, amount / 100, 100 / amount)

    report = behavioural_checks(peaked, examples, factors=(2.0,))

    # Doubling lowers the score of every row that ends up far enough past the peak.
    base = peaked(examples)
    doubled = peaked(examples.assign(amount=examples["amount"] * 2))
    expected = int((base - doubled > 1e-6).sum())
    assert expected > 0
    assert report["directional_amount_violations"] == expected
    assert report["directional_amount_violations_x2"] == expected
    assert report["directional_amount_rate"] == pytest.approx(expected / len(examples))
    assert report["directional_amount_max_drop"] > 0
    assert report["invariance_max_diff"] == 0.0
    assert report["passed"] is False
    assert behavioural_checks(peaked, examples, max_violation_rate=1.0)["passed"] is True


def test_behavioural_checks_detect_scores_that_depend_on_the_batch() -> None:
    def batch_relative(frame: pd.DataFrame) -> np.ndarray:
        # Normalising by the batch makes a row's score depend on its neighbours.
        amount = frame["amount"].to_numpy()
        return np.asarray(amount / (amount.max() + 1.0))

    report = behavioural_checks(batch_relative, _examples())

    assert report["invariance_single_row_diff"] > 1e-3
    assert report["invariance_repeat_diff"] == 0.0
    assert report["invariance_max_diff"] == report["invariance_single_row_diff"]
    assert report["passed"] is False


def test_behavioural_checks_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="above 1"):
        behavioural_checks(_monotone, _examples(), factors=(0.5,))
    with pytest.raises(ValueError, match="scores for"):
        behavioural_checks(lambda f: np.zeros(3), _examples())


def test_behavioural_invariance_tolerates_float_rounding_only() -> None:
    examples = _examples()

    def rounding(frame: pd.DataFrame) -> np.ndarray:
        # Batch-size-dependent noise as small as float32 matmul rounding.
        return _monotone(frame) + 1e-7 * (len(frame) % 3)

    report = behavioural_checks(rounding, examples)
    assert 0 < report["invariance_max_diff"] < 1e-6
    assert report["passed"] is True
    assert behavioural_checks(rounding, examples, invariance_tol=1e-8)["passed"] is False


def test_behavioural_checks_on_a_trained_model() -> None:
    from driftline.training.model import ModelConfig
    from driftline.training.trainer import train_model

    train, valid = model_frame(2000, seed=1, fraud_rate=0.05), model_frame(1000, seed=2)
    model = train_model(ModelConfig(hidden=(32,), max_epochs=2), train, valid, seed=0)
    examples = risky_examples(model_frame(1000, seed=3))

    report = behavioural_checks(model.predict_proba, examples)

    # Row-wise torch inference: a row's score does not depend on its batch (beyond
    # float rounding). The directional result is the model's own business here.
    assert report["invariance_repeat_diff"] == 0.0
    assert report["invariance_max_diff"] < 1e-5
    assert 0 <= report["directional_amount_rate"] <= 1
