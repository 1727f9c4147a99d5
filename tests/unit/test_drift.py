"""Drift monitoring: Evidently drift on small frames, the retrain decision and its state."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from driftline.core.columns import MODEL_INPUTS
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.monitoring import DriftLog, DriftResult, TriggerDecision, compute_drift, decide
from driftline.monitoring.drift import performance_check, performance_days
from tests.frames import model_frame

DAY = date(2026, 2, 1)
#: Columns the shifted frame moves (9 of 22 inputs: above a 0.3 share threshold).
SHIFTED = (
    "amount",
    "hour_of_day",
    "user_amount_sum_24h",
    "user_amount_max_24h",
    "user_amount_mean_7d",
    "user_new_device",
    "merchant_country",
    "channel",
    "currency",
)


def _scored(frame: pd.DataFrame, seed: int, shift: float = 0.0) -> pd.DataFrame:
    """Add a ``score`` that depends on the label (a stand-in for a served model)."""
    rng = np.random.default_rng(seed)
    base = np.where(frame["label"] == 1, rng.beta(5, 2, len(frame)), rng.beta(1, 20, len(frame)))
    out = frame.copy()
    out["score"] = np.clip(base + shift, 0.0, 1.0)
    out["variant"] = "champion"
    return out


def _shifted(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for name in ("amount", "user_amount_sum_24h", "user_amount_max_24h", "user_amount_mean_7d"):
        out[name] = out[name] * 3
    out["hour_of_day"] = (out["hour_of_day"] % 6).astype(float)  # all night-time
    out["user_new_device"] = 1.0
    # The fresh features see the same shift: bigger amounts, new devices, foreign countries.
    for name in ("fresh_user_amount_sum_1h", "fresh_user_amount_sum_24h"):
        out[name] = out[name] * 3 + 50
    out["fresh_user_device_new"] = 1.0
    out["fresh_user_country_foreign"] = 1.0
    out["fresh_user_amount_to_median_7d"] = out["fresh_user_amount_to_median_7d"] * 3
    out["merchant_country"] = "NG"
    out["channel"] = "online"
    out["currency"] = "EUR"
    return out


@pytest.fixture(scope="module")
def reference() -> pd.DataFrame:
    return _scored(model_frame(3000, seed=0), seed=0)


@pytest.fixture(scope="module")
def served() -> pd.DataFrame:
    return _scored(model_frame(1500, seed=1), seed=1)


def test_same_distribution_is_not_drift(
    reference: pd.DataFrame, served: pd.DataFrame, settings: Settings, tmp_path: Path
) -> None:
    result = compute_drift(reference, served, Interval.for_day(DAY), settings, report_dir=tmp_path)

    assert result.status == "ok" and result.rows == len(served)
    assert not result.dataset_drift and result.drift_share < settings.drift_share_threshold
    assert not result.prediction_drift and result.prediction_drift_score is not None
    assert not result.drifted
    assert set(result.column_scores) == set(MODEL_INPUTS)
    assert result.performance is None


def test_shifted_inputs_are_drift_named_and_reported(
    reference: pd.DataFrame, served: pd.DataFrame, settings: Settings, tmp_path: Path
) -> None:
    settings = settings.model_copy(update={"drift_share_threshold": 0.3})
    result = compute_drift(
        reference, _shifted(served), Interval.for_day(DAY), settings, report_dir=tmp_path
    )

    assert result.dataset_drift and result.drifted
    assert set(SHIFTED) <= set(result.drifted_columns)
    assert result.drift_share >= settings.drift_share_threshold
    folder = tmp_path / f"dt={DAY.isoformat()}"
    assert result.report_html == str(folder / "drift_report.html")
    html = Path(result.report_html).read_text(encoding="utf-8")
    assert "merchant_country" in html
    summary = json.loads((folder / "drift.json").read_text(encoding="utf-8"))
    assert summary["drifted_columns"] == result.drifted_columns and summary["drifted"]
    assert DriftResult.from_dict(summary) == result


def test_feature_missing_on_every_served_row_counts_as_drifted(
    reference: pd.DataFrame, served: pd.DataFrame, settings: Settings, tmp_path: Path
) -> None:
    current = served.copy()
    current["merchant_fraud_rate_14d"] = None  # what the JSON log gives for an absent feature

    result = compute_drift(reference, current, Interval.for_day(DAY), settings, report_dir=tmp_path)

    assert "merchant_fraud_rate_14d" in result.drifted_columns
    assert any("missing on every served row" in note for note in result.notes)


def test_shifted_scores_are_prediction_drift(
    reference: pd.DataFrame, served: pd.DataFrame, settings: Settings, tmp_path: Path
) -> None:
    current = _scored(served.drop(columns="score"), seed=1, shift=0.3)

    result = compute_drift(reference, current, Interval.for_day(DAY), settings, report_dir=tmp_path)

    assert result.prediction_drift and result.drifted and not result.dataset_drift
    assert result.prediction_drift_score is not None
    assert result.prediction_drift_score >= settings.drift_prediction_threshold


def test_reference_without_scores_skips_prediction_drift(
    reference: pd.DataFrame, served: pd.DataFrame, settings: Settings, tmp_path: Path
) -> None:
    result = compute_drift(
        reference.drop(columns="score"),
        served,
        Interval.for_day(DAY),
        settings,
        report_dir=tmp_path,
    )

    assert result.prediction_drift_score is None and not result.prediction_drift
    assert any("reference has no scores" in note for note in result.notes)


def test_performance_on_labels(
    reference: pd.DataFrame, served: pd.DataFrame, settings: Settings, tmp_path: Path
) -> None:
    current = served.copy()
    current.loc[current.index[:300], "variant"] = "canary"
    labels = served[["transaction_id", "label"]].iloc[:1000]

    result = compute_drift(
        reference, current, Interval.for_day(DAY), settings, labels=labels, report_dir=tmp_path
    )

    perf = result.performance
    assert perf is not None
    assert perf["labelled_rows"] == 1000 and perf["served_rows"] == len(current)
    assert perf["pr_auc"] > perf["base_rate"] and perf["roc_auc"] > 0.8
    assert set(perf["by_variant"]) == {"canary", "champion"}
    # Canary rows are left out of prediction drift, and say so.
    assert any("canary or earlier-champion rows left out" in note for note in result.notes)


def test_one_class_labels_give_a_note(
    reference: pd.DataFrame, served: pd.DataFrame, settings: Settings, tmp_path: Path
) -> None:
    negatives = served.loc[served["label"] == 0, ["transaction_id", "label"]].iloc[:50]

    result = compute_drift(
        reference, served, Interval.for_day(DAY), settings, labels=negatives, report_dir=tmp_path
    )

    perf = result.performance
    assert perf is not None and perf["pr_auc"] is None and perf["roc_auc"] is None
    assert perf["note"].startswith("not enough labels")


def test_too_few_rows_is_insufficient_data(
    reference: pd.DataFrame, served: pd.DataFrame, settings: Settings, tmp_path: Path
) -> None:
    current = _shifted(served.iloc[: settings.drift_min_rows - 1])

    result = compute_drift(reference, current, Interval.for_day(DAY), settings, report_dir=tmp_path)

    assert result.status == "insufficient_data" and not result.drifted
    assert result.report_html is None and result.report_json is not None
    assert Path(result.report_json).exists()


def test_day_without_predictions_is_insufficient_data(
    reference: pd.DataFrame, served: pd.DataFrame, settings: Settings, tmp_path: Path
) -> None:
    labels = served[["transaction_id", "label"]]

    result = compute_drift(
        reference,
        pd.DataFrame(),
        Interval.for_day(DAY),
        settings,
        labels=labels,
        report_dir=tmp_path,
    )

    assert result.status == "insufficient_data" and result.rows == 0
    assert result.performance is not None and result.performance["labelled_rows"] == 0


def test_missing_model_input_is_a_clear_error(
    reference: pd.DataFrame, served: pd.DataFrame, settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="channel"):
        compute_drift(
            reference,
            served.drop(columns="channel"),
            Interval.for_day(DAY),
            settings,
            report_dir=tmp_path,
        )


# --------------------------------------------------------------------------------------
# decide: pure, on hand-made results
# --------------------------------------------------------------------------------------


def _result(day: date, *, drifted: bool = True, rows: int = 1000) -> DriftResult:
    status = "ok" if rows >= 200 else "insufficient_data"
    return DriftResult(
        interval=str(Interval.for_day(day)),
        day=day.isoformat(),
        status=status,
        rows=rows,
        reference_rows=3000,
        drifted_columns=["amount", "channel"] if drifted and status == "ok" else [],
        drift_share=0.5 if drifted and status == "ok" else 0.0,
        dataset_drift=drifted and status == "ok",
        prediction_drift_score=None,
        prediction_drift=False,
    )


#: The policy the decision tests assume (explicit, whatever the environment sets); the
#: wait for labels is off here and tested on its own below.
POLICY = Settings(
    drift_debounce_days=2, drift_cooldown_days=7, drift_min_rows=200, retrain_min_drift_days=0
)
#: Labels mature in 3 days; 1 valid and 1 holdout day; 3 labelled drift days to train on.
LABEL_POLICY = POLICY.model_copy(
    update={
        "label_maturity_days": 3,
        "valid_days": 1,
        "holdout_days": 1,
        "retrain_min_drift_days": 3,
    }
)


def _day(n: int) -> date:
    return DAY + timedelta(days=n)


def _decide(
    history: list[DriftResult] | list[dict[str, Any]], n: int, last: date | None = None
) -> TriggerDecision:
    return decide(history, last_trigger_day=last, today=Interval.for_day(_day(n)), settings=POLICY)


def test_single_drifted_day_does_not_trigger() -> None:
    decision = _decide([_result(_day(0), drifted=False), _result(_day(1))], 1)

    assert not decision.trigger and "debounce" in decision.reason
    assert decision.window_start == _day(1)


def test_two_consecutive_drifted_days_trigger_from_the_first() -> None:
    history = [_result(_day(0), drifted=False), _result(_day(1)), _result(_day(2))]

    decision = _decide(history, 2)

    assert decision.trigger
    assert (decision.window_start, decision.window_end) == (_day(1), _day(3))
    assert decision.window == Interval.parse(_day(1), _day(3))


def test_drift_that_persists_triggers_once_per_cooldown() -> None:
    history: list[DriftResult] = []
    last: date | None = None
    triggered: list[int] = []
    for n in range(20):
        history.append(_result(_day(n)))
        decision = decide(
            history, last_trigger_day=last, today=Interval.for_day(_day(n)), settings=POLICY
        )
        if decision.trigger:
            triggered.append(n)
            last = _day(n)

    # Day 1 (debounce of 2), then once the 7-day cool-down is over (a fresh 2-day streak
    # observed after the trigger is already there), and again 7 days later.
    assert triggered == [1, 8, 15]


def test_cooldown_blocks_and_ends() -> None:
    history = [_result(_day(n)) for n in range(10)]

    blocked = _decide(history, 5, last=_day(1))
    after = _decide(history, 8, last=_day(1))

    assert not blocked.trigger and "cool-down" in blocked.reason
    assert after.trigger and after.window_start == _day(2)


def test_rerun_of_an_older_day_never_triggers_behind_a_newer_trigger() -> None:
    history = [_result(_day(n)) for n in range(10)]

    decision = _decide(history, 3, last=_day(9))

    assert not decision.trigger


def test_insufficient_data_days_break_nothing() -> None:
    history = [_result(_day(0)), _result(_day(1), rows=10), _result(_day(2))]

    quiet = _decide(history, 1)
    resumed = _decide(history, 2)

    assert not quiet.trigger and "insufficient data" in quiet.reason
    assert resumed.trigger and resumed.window_start == _day(0)


def test_a_clean_day_resets_the_streak() -> None:
    history = [_result(_day(0)), _result(_day(1), drifted=False), _result(_day(2))]

    assert not _decide(history, 2).trigger


def test_decide_accepts_stored_dicts_and_ignores_later_days() -> None:
    history = [r.to_dict() for r in (_result(_day(0)), _result(_day(1)), _result(_day(2)))]

    assert _decide(history, 1).trigger
    assert not _decide(history, 0).trigger
    assert not _decide(history, 5).trigger  # no result for that day


def test_retrain_waits_until_the_train_split_holds_labelled_drift_days() -> None:
    history: list[DriftResult] = []
    decisions: dict[int, TriggerDecision] = {}
    for n in range(12):
        history.append(_result(_day(n)))
        decisions[n] = decide(
            history, last_trigger_day=None, today=Interval.for_day(_day(n)), settings=LABEL_POLICY
        )

    # The train split of a cut-off at the end of day n ends before day n + 1 - 5; it holds
    # 3 drift days (0, 1, 2) first for n = 7.
    assert [n for n, d in decisions.items() if d.trigger] == [7, 8, 9, 10, 11]
    waiting = decisions[6]
    assert "waiting for labels" in waiting.reason and "2 labelled day(s)" in waiting.reason
    assert "from the interval of 2026-02-08 on" in waiting.reason
    assert (waiting.window_start, waiting.window_end) == (_day(0), _day(7))


def _label_decisions(drifted: list[bool]) -> dict[int, TriggerDecision]:
    """Decisions on days 0.. of results drifted as ``drifted`` says (LABEL_POLICY)."""
    history = [_result(_day(n), drifted=d) for n, d in enumerate(drifted)]
    return {
        n: decide(
            history, last_trigger_day=None, today=Interval.for_day(_day(n)), settings=LABEL_POLICY
        )
        for n in range(len(drifted))
    }


def test_a_confirmed_drift_waiting_for_labels_is_held_through_a_clean_day() -> None:
    # Confirmed on day 1, waiting for labels until day 7; day 6 alone shows no drift.
    decisions = _label_decisions([True] * 6 + [False, True])

    held = decisions[6]
    assert not held.trigger and "waiting for labels" in held.reason
    assert "held (1 interval(s) without drift since, 2 in a row end it)" in held.reason
    assert held.window_start == _day(0)
    assert decisions[7].trigger and decisions[7].window_start == _day(0)


def test_a_held_drift_triggers_on_a_clean_day_once_its_labels_are_there() -> None:
    decisions = _label_decisions([True] * 7 + [False])

    assert decisions[7].trigger and "today: no drift" in decisions[7].reason
    assert (decisions[7].window_start, decisions[7].window_end) == (_day(0), _day(8))


def test_a_confirmed_drift_ends_on_as_many_clean_days_as_confirmed_it() -> None:
    decisions = _label_decisions([True] * 5 + [False, False, True, False])

    assert [n for n, d in decisions.items() if d.trigger] == []
    assert decisions[6].reason.endswith("no drift (drift share 0.00)")
    assert "debounce" in decisions[7].reason and decisions[7].window_start == _day(7)


def _performance_only(day: date, last_matured: date) -> DriftResult:
    return DriftResult(
        interval=str(Interval.for_day(day)),
        day=day.isoformat(),
        status="ok",
        rows=1000,
        reference_rows=3000,
        drifted_columns=[],
        drift_share=0.0,
        dataset_drift=False,
        prediction_drift_score=0.01,
        prediction_drift=False,
        performance_check={
            "first_day": (last_matured - timedelta(days=1)).isoformat(),
            "last_day": last_matured.isoformat(),
            "pr_auc": 0.1,
            "floor": 0.2,
        },
        performance_drift=True,
    )


def test_performance_drift_dates_the_window_by_the_matured_day() -> None:
    # Days 3 and 5 judge matured days -1..0 and 1..2: independent evidence.
    history = [_performance_only(_day(n), _day(n - 3)) for n in (3, 5)]

    decision = _decide(history, 5)

    assert decision.trigger and "served PR-AUC 0.100 significantly below 0.200" in decision.reason
    assert decision.window_start == _day(0)  # the labels of day 0 showed the drift first


def _served_rows(scores: np.ndarray, variant: str = "champion") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(scores))],
            "score": scores,
            "variant": variant,
        }
    )


def test_performance_check_flags_a_drop_below_the_floor() -> None:
    rng = np.random.default_rng(0)
    scores = rng.random(1000)
    good = {f"t{i}" for i in np.argsort(scores)[-40:]}  # frauds get the highest scores
    random = {f"t{i}" for i in rng.choice(1000, 40, replace=False)}
    days = Interval.parse("2026-02-01", "2026-02-03")
    settings = Settings(drift_performance_drop=0.25, drift_min_positives=20)

    kept = performance_check(
        _served_rows(scores), good, days=days, reference_pr_auc=0.8, settings=settings
    )
    dropped = performance_check(
        _served_rows(scores), random, days=days, reference_pr_auc=0.8, settings=settings
    )
    canary_only = performance_check(
        _served_rows(scores, "canary"), good, days=days, reference_pr_auc=0.8, settings=settings
    )

    assert kept["pr_auc"] == pytest.approx(1.0) and not kept["drifted"]
    assert dropped["pr_auc"] < 0.6 and dropped["drifted"]
    assert (dropped["first_day"], dropped["last_day"]) == ("2026-02-01", "2026-02-02")
    assert canary_only["rows"] == 0 and not canary_only["drifted"]
    assert canary_only["verdict"] == "insufficient_evidence"
    assert "insufficient evidence" in canary_only["note"]


def test_performance_check_needs_enough_frauds_and_a_reference() -> None:
    scores = np.linspace(0, 1, 500)
    days = Interval.parse("2026-02-01", "2026-02-02")
    settings = Settings(drift_min_positives=20)

    few = performance_check(
        _served_rows(scores), {"t1", "t2"}, days=days, reference_pr_auc=0.8, settings=settings
    )
    unreferenced = performance_check(
        _served_rows(scores),
        {f"t{i}" for i in range(30)},
        days=days,
        reference_pr_auc=None,
        settings=settings,
    )

    assert not few["drifted"] and "2 labelled frauds" in few["note"]
    assert not unreferenced["drifted"] and "no reference" in unreferenced["note"]


def test_performance_days_end_label_maturity_before_the_interval() -> None:
    settings = Settings(label_maturity_days=3, drift_performance_days=2)

    days = performance_days(Interval.for_day(date(2026, 1, 10)), settings)

    assert days == Interval.parse("2026-01-05", "2026-01-07")


# --------------------------------------------------------------------------------------
# DriftLog
# --------------------------------------------------------------------------------------


def test_drift_log_replaces_a_recomputed_day_and_round_trips(settings: Settings) -> None:
    drift_log = DriftLog.load(settings)
    assert drift_log.history() == [] and drift_log.last_trigger_day is None

    drift_log.record(_result(_day(0)))
    drift_log.record(_result(_day(1)))
    drift_log.record(_result(_day(0), drifted=False))  # the day recomputed
    decision = TriggerDecision(True, "test", _day(0), _day(2))
    drift_log.record_trigger(_day(1), decision)
    path = drift_log.save()

    assert path == f"{settings.lake_uri}/monitoring/drift_log"
    loaded = DriftLog.load(settings)
    assert [r.day for r in loaded.history()] == [_day(0).isoformat(), _day(1).isoformat()]
    assert not loaded.history()[0].drifted
    assert loaded.history(until=_day(0)) == loaded.history()[:1]
    assert loaded.last_trigger_day == _day(1)
    assert loaded.to_dict() == drift_log.to_dict()


def test_drift_log_older_trigger_never_erases_a_newer_one(settings: Settings) -> None:
    drift_log = DriftLog.load(settings)
    drift_log.record_trigger(_day(9), TriggerDecision(True, "newer", _day(8), _day(10)))
    drift_log.record_trigger(_day(3), TriggerDecision(True, "older rerun", _day(2), _day(4)))

    assert drift_log.last_trigger_day == _day(9)
    with pytest.raises(ValueError):
        drift_log.record_trigger(_day(10), TriggerDecision(False, "no"))
