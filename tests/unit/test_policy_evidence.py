"""Decisions on evidence, on hand-made frames: significance of a PR-AUC drop, calibrated
data-drift thresholds, fallback rows set apart, independent evidence days, the drift
start, the new-regime promotion gate, the canary's re-judgement and a no-drift loop."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from driftline.core.evidence import (
    average_precision,
    difference_interval,
    paired_difference_interval,
    pr_auc_interval,
    roc_auc,
)
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.lifecycle.gates import RegimeEvidence, regime_gate
from driftline.monitoring import canary_labels
from driftline.monitoring.drift import measure_drift, performance_check
from driftline.monitoring.policy import decide, independent_evidence
from driftline.monitoring.result import DriftResult
from driftline.monitoring.steps import training_window_start
from tests.frames import model_frame

DAY = date(2026, 3, 2)
DAYS = Interval.parse("2026-02-26", "2026-02-28")
#: A fast bootstrap: enough resamples for stable 90% intervals on these sizes.
FAST = {"drift_bootstrap_samples": 200, "drift_confidence": 0.9}


def _logits(n: int, positives: int, seed: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    """``n`` rows, ``positives`` frauds; fraud logits shifted up by ``signal`` (0: noise)."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(n, dtype=np.int64)
    labels[rng.choice(n, positives, replace=False)] = 1
    return labels, rng.normal(0.0, 1.0, n) + signal * labels - 3.0


def _scored(n: int, positives: int, seed: int, signal: float) -> tuple[np.ndarray, np.ndarray]:
    """As :func:`_logits`, the scores as probabilities (what a served model logs)."""
    labels, logits = _logits(n, positives, seed, signal)
    return labels, 1.0 / (1.0 + np.exp(-logits))


def _served(
    labels: np.ndarray, scores: np.ndarray, prefix: str = "s"
) -> tuple[pd.DataFrame, set[str]]:
    ids = [f"{prefix}{i}" for i in range(labels.size)]
    frame = pd.DataFrame({"transaction_id": ids, "score": scores, "variant": "champion"})
    return frame, {ids[i] for i in np.flatnonzero(labels)}


def _check(
    served: tuple[np.ndarray, np.ndarray],
    reference: tuple[np.ndarray, np.ndarray],
    **update: object,
) -> dict:
    frame, frauds = _served(*served)
    settings = Settings(drift_min_positives=20, drift_performance_drop=0.25, **FAST).model_copy(
        update=update
    )
    return performance_check(
        frame, frauds, days=DAYS, reference_pr_auc=None, settings=settings, reference=reference
    )


# --------------------------------------------------------------------------------------
# PR-AUC and its intervals
# --------------------------------------------------------------------------------------


def test_average_precision_is_sklearns_with_ties() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random(2000) < 0.05).astype(np.int64)
    scores = np.round(rng.random(2000) + 0.4 * labels, 2)  # many ties

    assert average_precision(labels, scores) == pytest.approx(
        average_precision_score(labels, scores)
    )
    assert average_precision(np.zeros(5, dtype=np.int64), np.arange(5.0)) is None


def test_intervals_are_reproducible_and_cover_the_estimate() -> None:
    labels, scores = _scored(3000, 40, seed=1, signal=2.0)

    first = pr_auc_interval(labels, scores, samples=200, confidence=0.9)
    again = pr_auc_interval(labels, scores, samples=200, confidence=0.9)
    same = difference_interval((labels, scores), (labels, scores), samples=200, confidence=0.9)
    paired = paired_difference_interval(labels, scores, scores, samples=200, confidence=0.9)

    assert first == again  # fixed seed
    assert first.low is not None and first.high is not None and first.value is not None
    assert first.low < first.value < first.high
    assert same.low is not None and same.high is not None and same.low < 0 < same.high
    assert paired.value == 0.0 and paired.low == paired.high == 0.0


# --------------------------------------------------------------------------------------
# Performance drift: significant given the frauds, else insufficient evidence
# --------------------------------------------------------------------------------------


def test_noise_between_labelled_days_never_counts_as_degraded() -> None:
    reference = _scored(3000, 40, seed=100, signal=2.0)
    verdicts = [
        _check(_scored(3000, 40, seed=s, signal=2.0), reference)["verdict"] for s in range(8)
    ]

    assert "degraded" not in verdicts
    assert set(verdicts) <= {"ok", "insufficient_evidence"}


def test_a_real_drop_is_degraded_with_its_interval() -> None:
    reference = _scored(3000, 40, seed=100, signal=2.0)

    check = _check(_scored(3000, 40, seed=7, signal=0.3), reference)

    assert check["verdict"] == "degraded" and check["drifted"]
    assert check["pr_auc"] < check["floor"] < check["reference_pr_auc"]
    assert check["difference"]["high"] < 0
    assert "significant drop" in check["note"]


def test_a_drop_on_few_frauds_is_insufficient_evidence() -> None:
    reference = _scored(3000, 40, seed=100, signal=2.0)

    # Below the ROC-AUC floor on this sample, but 22 frauds cannot tell it from noise.
    check = _check(_scored(1000, 22, seed=4, signal=1.8), reference)
    few = _check(_scored(1000, 10, seed=4, signal=0.0), reference)

    assert check["roc_auc"] < check["roc_floor"]
    assert check["verdict"] == "insufficient_evidence" and not check["drifted"]
    assert check["roc_difference"]["high"] >= 0 and check["difference"]["high"] >= 0
    assert few["verdict"] == "insufficient_evidence" and "drift_min_positives" in few["note"]


def test_a_ranking_drop_is_caught_by_roc_auc_where_pr_auc_cannot_tell() -> None:
    reference = _scored(3000, 40, seed=100, signal=2.0)

    # The frauds' signal falls from 2.0 to 1.6 (true ROC-AUC 0.92 -> 0.87): a real drop.
    check = _check(_scored(1000, 22, seed=4, signal=1.6), reference)

    assert check["pr_auc"] < check["floor"] and check["difference"]["high"] >= 0
    assert check["roc_auc"] < check["roc_floor"] and check["roc_difference"]["high"] < 0
    assert check["verdict"] == "degraded" and check["degraded_on"] == ["roc_auc"]
    # Two tests per window: each interval at the Bonferroni level of drift_confidence 0.9.
    assert check["difference"]["confidence"] == check["roc_difference"]["confidence"] == 0.95
    assert "ROC-AUC" in check["note"]


def test_roc_auc_is_sklearns_with_ties() -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random(2000) < 0.05).astype(np.int64)
    scores = np.round(rng.random(2000) + 0.4 * labels, 2)  # many ties

    assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores))
    assert roc_auc(np.zeros(5, dtype=np.int64), np.arange(5.0)) is None


def test_fallback_rows_are_left_out_of_the_performance_check() -> None:
    reference = _scored(3000, 40, seed=100, signal=2.0)
    labels, scores = _scored(3000, 40, seed=5, signal=2.0)
    frame, frauds = _served(labels, scores)
    # 1000 extra rows scored with fallback features: frauds scored lowest of all.
    extra, extra_frauds = _served(*_scored(1000, 200, seed=6, signal=-5.0), prefix="f")
    served = pd.concat([frame, extra.assign(features_fallback=True)], ignore_index=True)
    served["features_fallback"] = served["features_fallback"].eq(True)
    settings = Settings(drift_min_positives=20, **FAST)

    check = performance_check(
        served, frauds | extra_frauds, days=DAYS, reference_pr_auc=None, settings=settings,
        reference=reference,
    )  # fmt: skip

    assert check["fallback_rows"] == 1000 and check["rows"] == 3000
    assert check["verdict"] != "degraded"


# --------------------------------------------------------------------------------------
# Data drift: thresholds calibrated on the reference's own days
# --------------------------------------------------------------------------------------


def _reference() -> pd.DataFrame:
    """Seven reference days of 600 rows each, scored."""
    frame = model_frame(4200, seed=0, days=7)
    frame["score"] = np.clip(0.02 + 0.5 * frame["label"] + 0.01 * np.arange(len(frame)) % 0.1, 0, 1)
    return frame


def _day(seed: int) -> pd.DataFrame:
    frame = model_frame(600, seed=seed, days=1)
    frame["score"] = np.clip(0.02 + 0.5 * frame["label"] + 0.01 * np.arange(len(frame)) % 0.1, 0, 1)
    frame["variant"] = "champion"
    return frame


def _shifted(frame: pd.DataFrame) -> pd.DataFrame:
    out = frame.copy()
    for name in ("amount", "user_amount_sum_24h", "user_amount_max_24h", "user_amount_mean_7d"):
        out[name] = out[name] * 1.6
    out["channel"] = np.where(np.arange(len(out)) % 3 == 0, "pos", "online")
    out["merchant_category"] = np.where(
        np.arange(len(out)) % 2 == 0, "electronics", out["merchant_category"]
    )
    out["user_txn_count_24h"] = out["user_txn_count_24h"] + 2
    out["merchant_txn_count_24h"] = out["merchant_txn_count_24h"] * 1.5
    out["user_distinct_merchants_24h"] = out["user_distinct_merchants_24h"] + 1
    out["merchant_txn_count_14d"] = out["merchant_txn_count_14d"] * 1.5
    out["user_txn_count_7d"] = out["user_txn_count_7d"] * 1.5
    out["user_amount_std_7d"] = out["user_amount_std_7d"] * 1.6
    out["user_seconds_since_prev_txn"] = out["user_seconds_since_prev_txn"] * 0.5
    # The fresh features move with the shift (more and larger earlier transactions).
    for name in ("fresh_user_txn_count_24h", "fresh_user_txn_count_7d"):
        out[name] = out[name] + 2
    for name in ("fresh_user_amount_sum_1h", "fresh_user_amount_sum_24h"):
        out[name] = out[name] * 1.6 + 20
    out["fresh_user_seconds_since_prev"] = out["fresh_user_seconds_since_prev"] * 0.5
    return out


def _settings() -> Settings:
    return Settings(drift_share_threshold=0.4, drift_min_rows=200)


@pytest.mark.slow  # Evidently over several days: ~15-20 s, in make test only
def test_calibrated_thresholds_see_no_drift_in_a_day_like_the_reference() -> None:
    reference = _reference()

    results = [
        measure_drift(reference, _day(seed), Interval.for_day(DAY), _settings()).result
        for seed in (11, 12)
    ]

    for result in results:
        assert not result.dataset_drift
        calibration = result.calibration
        assert calibration is not None and calibration["chunking"] == "day"
        assert calibration["chunks"] == 7
        assert result.drift_share < 0.4
        # Thresholds are the reference's own: above the floor, per input.
        scores = result.column_scores
        assert all(s["threshold"] == calibration["thresholds"][c] for c, s in scores.items())
        assert any("no-drift baseline" in note for note in result.notes)


def test_calibrated_thresholds_see_a_shifted_day() -> None:
    result = measure_drift(
        _reference(), _shifted(_day(11)), Interval.for_day(DAY), _settings()
    ).result

    assert result.dataset_drift and result.drifted
    assert {"amount", "channel", "merchant_category"} <= set(result.drifted_columns)
    assert result.calibration is not None
    assert result.drift_share > result.calibration["baseline_share_max"]


def test_fallback_rows_are_left_out_of_data_drift_and_reported_apart() -> None:
    day = _day(11)
    broken = _shifted(_day(12)).assign(features_fallback=True)
    current = pd.concat([day.assign(features_fallback=False), broken], ignore_index=True)

    result = measure_drift(_reference(), current, Interval.for_day(DAY), _settings()).result

    assert result.fallback_rows == len(broken) and result.rows == len(day)
    assert not result.dataset_drift
    assert any("fallback features" in note for note in result.notes)
    assert DriftResult.from_dict(result.to_dict()).fallback_rows == len(broken)


def test_a_day_of_fallback_rows_only_is_insufficient_data() -> None:
    current = _shifted(_day(12)).assign(features_fallback=True)

    result = measure_drift(_reference(), current, Interval.for_day(DAY), _settings()).result

    assert result.status == "insufficient_data" and result.fallback_rows == len(current)


def test_old_drift_log_entries_stay_readable() -> None:
    stored = {
        "interval": "[2026-03-02, 2026-03-03)", "day": "2026-03-02", "status": "ok",
        "rows": 900, "reference_rows": 3000, "drifted_columns": [], "drift_share": 0.1,
        "dataset_drift": False, "prediction_drift_score": 0.01, "prediction_drift": False,
        "drifted": False,
    }  # fmt: skip

    result = DriftResult.from_dict(stored)

    assert result.fallback_rows == 0 and result.calibration is None and not result.drifted


# --------------------------------------------------------------------------------------
# The trigger: independent evidence days and the drift start
# --------------------------------------------------------------------------------------

POLICY = Settings(drift_debounce_days=2, drift_cooldown_days=7, retrain_min_drift_days=0)


def _data_drift(n: int) -> DriftResult:
    day = DAY + timedelta(days=n)
    return DriftResult(
        str(Interval.for_day(day)), day.isoformat(), "ok", 900, 3000, ["amount"], 0.6, True,
        0.01, False,
    )  # fmt: skip


def _clean(n: int) -> DriftResult:
    day = DAY + timedelta(days=n)
    return DriftResult(
        str(Interval.for_day(day)), day.isoformat(), "ok", 900, 3000, [], 0.0, False, 0.01, False
    )


def _performance(n: int, first: int, last: int) -> DriftResult:
    day = DAY + timedelta(days=n)
    check = {
        "first_day": (DAY + timedelta(days=first)).isoformat(),
        "last_day": (DAY + timedelta(days=last)).isoformat(),
        "pr_auc": 0.05, "floor": 0.2, "verdict": "degraded", "drifted": True,
    }  # fmt: skip
    return DriftResult(
        str(Interval.for_day(day)), day.isoformat(), "ok", 900, 3000, [], 0.0, False, 0.01,
        False, performance_check=check, performance_drift=True,
    )  # fmt: skip


def _decide(history: list[DriftResult], n: int) -> object:
    return decide(
        history, last_trigger_day=None, today=Interval.for_day(DAY + timedelta(days=n)),
        settings=POLICY,
    )  # fmt: skip


def test_overlapping_performance_windows_are_one_piece_of_evidence() -> None:
    # Days 10 and 11 judge matured days 6-7 and 7-8: they share day 7.
    overlapping = [_clean(9), _performance(10, 6, 7), _performance(11, 7, 8)]
    # Days 10 and 12 judge 6-7 and 8-9: independent.
    disjoint = [_clean(9), _performance(10, 6, 7), _performance(12, 8, 9)]

    held = _decide(overlapping, 11)
    fired = _decide(disjoint, 12)

    assert not held.trigger and "independent evidence" in held.reason  # type: ignore[attr-defined]
    assert "share evidence days" in held.reason  # type: ignore[attr-defined]
    assert len(independent_evidence(list(reversed(overlapping[1:])))) == 1
    assert fired.trigger  # type: ignore[attr-defined]


def test_drift_start_is_the_first_drifted_day_itself() -> None:
    # Data drift from day 5; on day 6 a performance check also judges matured days 1-2.
    history = [_clean(4), _data_drift(5), _performance(6, 1, 2), _data_drift(7)]

    decision = _decide(history, 7)

    assert decision.trigger  # type: ignore[attr-defined]
    assert decision.window_start == DAY + timedelta(days=5)  # type: ignore[attr-defined]


def test_a_day_with_data_and_performance_drift_dates_the_drift_by_its_own_window() -> None:
    # Day 5's inputs drift and its own check finds a significant drop on matured days
    # 1-2: the drift is there from day 2 (a later result's window would not move it).
    both = dataclasses.replace(_performance(5, 1, 2), dataset_drift=True, drifted_columns=["a"])
    history = [_clean(4), both, _performance(6, 0, 1), _data_drift(7)]

    decision = _decide(history, 7)

    assert both.evidence_day == DAY + timedelta(days=2)
    assert decision.trigger  # type: ignore[attr-defined]
    assert decision.window_start == DAY + timedelta(days=2)  # type: ignore[attr-defined]


def test_no_retrain_window_starts_before_complete_look_back() -> None:
    settings = Settings(data_start=date(2026, 1, 1), retrain_window_days=21)

    assert training_window_start(date(2026, 1, 26), settings) == date(2026, 1, 15)
    assert training_window_start(date(2026, 3, 1), settings) == date(2026, 2, 8)
    no_start = Settings(data_start=None, retrain_window_days=21)
    assert training_window_start(date(2026, 1, 26), no_start) == date(2026, 1, 5)


# --------------------------------------------------------------------------------------
# Promotion on the new regime, and the canary's label re-judgement
# --------------------------------------------------------------------------------------


def _regime(
    candidate_signal: float, champion_signal: float, web_broken: bool = False
) -> RegimeEvidence:
    labels, noise = _logits(4000, 120, seed=21, signal=0.0)
    rng = np.random.default_rng(22)
    channel = np.where(rng.random(4000) < 0.5, "online", "pos")
    candidate = noise + candidate_signal * labels
    if web_broken:  # the candidate fails the online frauds entirely
        candidate = np.where((channel == "online") & (labels == 1), -9.0, candidate)
    champion = rng.normal(0.0, 1.0, 4000) + champion_signal * labels
    return RegimeEvidence(
        labels, candidate, champion, {"channel": channel}, ("2026-03-01",), "2026-02-27"
    )


def test_a_candidate_better_on_the_new_regime_passes() -> None:
    result = regime_gate(_regime(2.5, 1.0), Settings(**FAST))

    assert result.passed, result.reason
    assert result.metrics["regime.diff"] > 0 and result.metrics["regime.positives"] == 120
    assert "segment.channel.online.diff" in result.metrics


def test_a_candidate_worse_on_a_segment_with_evidence_is_not_promoted() -> None:
    result = regime_gate(_regime(4.0, 1.0, web_broken=True), Settings(**FAST))

    assert not result.passed
    assert "significantly worse on segments: channel=online" in result.reason


def test_segment_intervals_hold_the_family_wise_error_over_judged_segments() -> None:
    evidence = _regime(4.0, 1.0, web_broken=True)
    settings = Settings(**FAST)
    judged = 2  # channel online and pos, about 60 frauds each

    result = regime_gate(evidence, settings)

    corrected = 1.0 - (1.0 - settings.drift_confidence) / judged
    assert f"at {corrected:.1%}" in result.reason


def test_no_promotion_without_enough_post_drift_frauds_or_when_not_better() -> None:
    evidence = _regime(2.5, 1.0)
    few = RegimeEvidence(
        evidence.labels[:300], evidence.candidate[:300], evidence.champion[:300], {}, (), "x"
    )

    assert "insufficient evidence on the new regime" in regime_gate(few, Settings(**FAST)).reason
    assert not regime_gate(_regime(1.0, 2.5), Settings(**FAST)).passed


def test_the_gate_counts_accounts_with_a_fraud_not_fraud_rows() -> None:
    """120 frauds in 6 bursts (one card each) are 6 pieces of evidence, below the 20 needed."""
    evidence = _regime(2.5, 1.0)
    accounts = np.arange(evidence.labels.size)  # every row its own account
    fraud_rows = np.flatnonzero(evidence.labels == 1)
    bursts = accounts.copy()
    bursts[fraud_rows] = fraud_rows % 6  # six cards hold every fraud
    settings = Settings(**FAST)

    spread = regime_gate(dataclasses.replace(evidence, accounts=accounts), settings)
    burst = regime_gate(dataclasses.replace(evidence, accounts=bursts), settings)

    assert spread.passed, spread.reason
    assert spread.metrics["regime.fraud_accounts"] == 120
    assert not burst.passed
    assert "120 labelled frauds in 6 accounts" in burst.reason
    assert "insufficient evidence on the new regime" in burst.reason


def test_canary_promoted_provisionally_is_rejudged_once_labels_mature() -> None:
    settings = Settings(label_maturity_days=3, canary_min_positives=10, **FAST)
    tags = canary_labels.provisional_tags(["2026-03-01", "2026-03-02"], settings)
    canary_rows, canary_frauds = _served(*_scored(2000, 40, seed=31, signal=0.2), prefix="c")
    good_rows, good_frauds = _served(*_scored(2000, 40, seed=32, signal=3.0), prefix="g")
    champion_rows, champion_frauds = _served(*_scored(2000, 40, seed=33, signal=2.5), prefix="p")

    worse = canary_labels.judge(
        canary_rows, champion_rows, canary_frauds | champion_frauds, settings
    )
    fine = canary_labels.judge(good_rows, champion_rows, good_frauds | champion_frauds, settings)
    early = canary_labels.judge(canary_rows, champion_rows, set(), settings)

    assert tags["canary.rejudge_on"] == "2026-03-06"
    assert not canary_labels.due(tags, date(2026, 3, 5)) and canary_labels.due(
        tags, date(2026, 3, 6)
    )
    assert worse.outcome == "rolled_back" and fine.outcome == "confirmed"
    assert early.outcome == "kept"
    assert not canary_labels.labels_judged({"canary": {"positives": 0}}, settings)


# --------------------------------------------------------------------------------------
# A small no-drift loop
# --------------------------------------------------------------------------------------


@pytest.mark.slow  # Evidently over several days: ~15-20 s, in make test only
def test_a_no_drift_loop_never_asks_for_a_retrain() -> None:
    settings = Settings(
        drift_share_threshold=0.5, drift_min_rows=200, drift_debounce_days=2,
        retrain_min_drift_days=0, drift_min_positives=15, **FAST,
    )  # fmt: skip
    reference = _reference()
    ref_labels = reference["label"].to_numpy(dtype=np.int64)
    evidence = (ref_labels, reference["score"].to_numpy(dtype=np.float64))
    history: list[DriftResult] = []
    decisions = []
    for n in range(4):
        today = Interval.for_day(DAY + timedelta(days=n))
        served = pd.concat([_day(100 + n), _day(200 + n)], ignore_index=True)
        served["transaction_id"] = [f"d{n}-{i}" for i in range(len(served))]
        frauds = set(served.loc[served["label"] == 1, "transaction_id"])
        check = performance_check(
            served, frauds, days=today, reference_pr_auc=None, settings=settings,
            reference=evidence,
        )  # fmt: skip
        history.append(measure_drift(reference, served, today, settings, performance=check).result)
        decisions.append(decide(history, last_trigger_day=None, today=today, settings=settings))

    assert not any(d.trigger for d in decisions), [d.reason for d in decisions]
    assert not any(r.drifted for r in history)


# --------------------------------------------------------------------------------------
# Like with like: the same label maturity for served and reference days
# --------------------------------------------------------------------------------------


def _chargebacks(settings: Settings, rows: list[tuple[str, str, str]]) -> None:
    """Raw label partitions per report day: (transaction id, transaction day, report day)."""
    import pyarrow as pa

    from driftline.core import lake
    from driftline.core.schemas import LABELS

    by_report: dict[str, list[tuple[str, str]]] = {}
    for tx_id, tx_day, report_day in rows:
        by_report.setdefault(report_day, []).append((tx_id, tx_day))
    for report_day, items in by_report.items():
        stamp = pd.Timestamp(report_day, tz="UTC") + pd.Timedelta(hours=12)
        table = pa.table(
            {
                "transaction_id": [tx for tx, _ in items],
                "user_id": [1] * len(items),
                "merchant_id": [1] * len(items),
                "transaction_ts": [
                    pd.Timestamp(d, tz="UTC") + pd.Timedelta(hours=9) for _, d in items
                ],
                "label_ts": [stamp] * len(items),
                "is_fraud": [1] * len(items),
            }
        ).cast(LABELS)
        lake.replace_partition(
            settings.lake_uri, "raw", "labels", date.fromisoformat(report_day), table
        )


def test_served_and_reference_days_are_labelled_with_the_same_maturity(settings: Settings) -> None:
    from driftline.monitoring.served import frauds_known_within
    from driftline.monitoring.steps import _reference_evidence

    settings = settings.model_copy(update={"label_maturity_days": 3})
    _chargebacks(
        settings,
        [
            ("a", "2026-02-10", "2026-02-11"),  # 1 day late: known
            ("b", "2026-02-10", "2026-02-13"),  # 3 days: known
            ("c", "2026-02-10", "2026-02-14"),  # 4 days: not yet, under a 3-day maturity
            ("d", "2026-02-11", "2026-02-20"),  # 9 days: not yet
            ("e", "2026-02-09", "2026-02-10"),  # before the first day asked for
        ],
    )
    reference = pd.DataFrame(
        {
            "transaction_id": ["a", "b", "c", "d", "x", "y"],
            "event_timestamp": pd.to_datetime(["2026-02-10"] * 3 + ["2026-02-11"] * 3, utc=True),
            "split": ["holdout"] * 6,
            "label": [1, 1, 1, 1, 0, 0],  # the training labels, known at a later cut-off
            "score": [0.9, 0.8, 0.7, 0.6, 0.5, 0.1],
        }
    )

    known = frauds_known_within(settings, date(2026, 2, 10), date(2026, 2, 11), 3)
    evidence, rule, source = _reference_evidence(reference, settings)

    assert known == {"a", "b"}
    assert evidence is not None
    assert evidence[0].tolist() == [1, 1, 0, 0, 0, 0]  # relabelled, not the training labels
    assert "within 3 days" in rule
    assert source == "holdout 2026-02-10..2026-02-11"


def test_reference_prefers_holdout_days_over_the_validation_days() -> None:
    from driftline.monitoring.steps import _reference_evidence

    settings = Settings(drift_min_positives=2)
    # The validation day chose the model: it ranks perfectly there, worse on holdout.
    reference = pd.DataFrame(
        {
            "split": ["valid"] * 4 + ["holdout"] * 6 + ["train"] * 2,
            # valid (4) | holdout (6) | train (2)
            "label": [1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 1, 0],
            "score": [0.9, 0.8, 0.1, 0.2, 0.9, 0.8, 0.3, 0.7, 0.6, 0.2, 0.9, 0.1],
        }
    )

    evidence, _, _ = _reference_evidence(reference, settings)
    assert evidence is not None
    assert evidence[0].tolist() == [1, 0, 1, 0, 1, 0]  # the holdout rows only

    few = _reference_evidence(reference, settings.model_copy(update={"drift_min_positives": 4}))[0]
    assert few is not None and few[0].size == 10  # too few holdout frauds: valid + holdout


def _log_served(settings: Settings, day: str, rows: list[tuple[str, str, str, bool]]) -> None:
    """Prediction-log rows of ``day``: (transaction id, variant, version, fallback)."""
    from driftline.data.predictions import PredictionLog

    stamp = pd.Timestamp(day, tz="UTC") + pd.Timedelta(hours=9)
    log = PredictionLog(settings, flush_rows=10_000)
    log.append(
        {
            "transaction_id": tx,
            "ts": stamp.to_pydatetime(),
            "user_id": i + 1,
            "merchant_id": 1,
            "score": 0.9 if tx.startswith("f") else 0.2,
            "variant": variant,
            "model_version": version,
            "features_fallback": fallback,
        }
        for i, (tx, variant, version, fallback) in enumerate(rows)
    )
    log.close()


def test_the_champions_first_served_days_join_its_reference(settings: Settings) -> None:
    from driftline.monitoring.steps import _reference_evidence, _served_reference

    settings = settings.model_copy(update={"label_maturity_days": 3})
    reference = pd.DataFrame(
        {
            "transaction_id": ["h1", "h2", "h3"],
            "event_timestamp": pd.to_datetime(["2026-02-08"] * 3, utc=True),
            "split": ["holdout"] * 3,
            "score": [0.8, 0.3, 0.1],
            "user_id": [101, 102, 103],
            "merchant_id": [1, 1, 1],
        }
    )
    _log_served(settings, "2026-02-07", [("old", "champion", "1", False)])  # before its data
    _log_served(
        settings,
        "2026-02-09",
        [
            ("f9", "champion", "1", False),
            ("c9", "champion", "1", False),
            ("canary9", "canary", "2", False),  # another version's rows
            ("fb9", "champion", "1", True),  # scored without stored features
        ],
    )
    _log_served(
        settings, "2026-02-10", [("f10", "champion", "1", False), ("c10", "champion", "1", False)]
    )
    _log_served(settings, "2026-02-11", [("f11", "champion", "1", False)])
    _log_served(settings, "2026-02-12", [("c12", "champion", "1", False)])
    _chargebacks(
        settings,
        [
            ("h1", "2026-02-08", "2026-02-09"),
            ("f9", "2026-02-09", "2026-02-11"),  # 2 days: known under a 3-day maturity
            ("f10", "2026-02-10", "2026-02-16"),  # 6 days: not yet
            ("f11", "2026-02-11", "2026-02-12"),
        ],
    )

    served, days = _served_reference(settings, "1", reference, date(2026, 2, 12))
    assert days == [date(2026, 2, 9), date(2026, 2, 10)]  # the first two, nothing older
    assert served is not None
    assert served["known"].tolist() == [1, 0, 0, 0]  # f9 c9 f10 c10: f10 not known in time
    assert len(served) == 4  # no canary, no fallback row

    # A day judged drifted stays out (its place is not taken by a later day).
    kept = _served_reference(settings, "1", reference, date(2026, 2, 12), {date(2026, 2, 9)})
    assert kept[1] == [date(2026, 2, 10)]
    # A judged day never joins its own reference, and 0 days keeps the holdout alone.
    assert _served_reference(settings, "1", reference, date(2026, 2, 10))[1] == [date(2026, 2, 9)]
    off = settings.model_copy(update={"drift_reference_served_days": 0})
    assert _served_reference(off, "1", reference, date(2026, 2, 12)) == (None, [])
    assert _served_reference(settings, "2", reference, date(2026, 2, 12)) == (None, [])

    evidence, _, source = _reference_evidence(reference, settings, served, days)
    assert source == "holdout 2026-02-08..2026-02-08 + served as champion 2026-02-09, 2026-02-10"
    assert evidence is not None
    labels, scores, groups = evidence
    assert labels.tolist() == [1, 0, 0, 1, 0, 0, 0]  # holdout first, then the served days
    assert scores.tolist() == [0.8, 0.3, 0.1, 0.9, 0.2, 0.9, 0.2]
    assert groups is not None and len(groups) == 7  # the campaigns of both parts
