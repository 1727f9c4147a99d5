"""Canary analysis on hand-made prediction-log rows: each check can fail on its own."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from driftline.core.settings import Settings
from driftline.monitoring.canary import analyse_canary, psi

SETTINGS = Settings(
    canary_min_requests=300,
    canary_max_error_rate=0.01,
    canary_max_latency_ratio=3.0,
    canary_latency_slack_ms=20.0,
    canary_max_score_psi=2.0,
    canary_min_positives=10,
    canary_label_tolerance=0.05,
)


def _rows(
    n: int,
    *,
    variant: str,
    version: str,
    seed: int,
    scores: np.ndarray | None = None,
    latency_ms: float = 2.0,
    failed_version: str | None = None,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    values = rng.beta(1, 20, n) if scores is None else scores
    return pd.DataFrame(
        {
            "transaction_id": [f"{variant}-{seed}-{i}" for i in range(n)],
            "ts": datetime(2026, 1, 28, 12, tzinfo=UTC),
            "score": values,
            "decision": np.where(values >= 0.5, "decline", "approve"),
            "variant": variant,
            "model_version": version,
            "model_latency_ms": rng.normal(latency_ms, latency_ms * 0.1, n).clip(0.1),
            "canary_failed_version": failed_version,
            "canary_error": None if failed_version is None else "RuntimeError: broken",
        }
    )


def _traffic(canary: pd.DataFrame, champion_rows: int = 1400) -> pd.DataFrame:
    return pd.concat(
        [_rows(champion_rows, variant="champion", version="1", seed=0), canary], ignore_index=True
    )


def _analyse(served: pd.DataFrame, frauds: set[str] | None = None):  # type: ignore[no-untyped-def]
    return analyse_canary(
        served, canary_version="2", champion_version="1", settings=SETTINGS, frauds=frauds
    )


def test_psi_is_zero_for_one_distribution_and_large_for_a_shift() -> None:
    rng = np.random.default_rng(0)
    sample = rng.beta(1, 20, 5000)

    assert psi(sample, sample) == pytest.approx(0.0)
    assert psi(sample, rng.beta(1, 20, 5000)) < 0.05
    assert psi(sample, np.clip(sample + 0.5, 0, 1)) > 3
    with pytest.raises(ValueError, match="non-empty"):
        psi(sample, np.array([]))


def test_a_healthy_canary_is_promoted_with_its_numbers() -> None:
    report = _analyse(_traffic(_rows(600, variant="canary", version="2", seed=1)))

    assert report.verdict == "promote", report.reasons
    assert (report.routed, report.errors, report.champion_rows) == (600, 0, 1400)
    assert report.score_psi is not None and report.score_psi < 0.1
    assert report.days == ["2026-01-28"]
    metrics = report.metrics()
    assert metrics["routed"] == 600 and metrics["error_rate"] == 0.0
    assert "canary_p99_ms" in metrics and "champion_p99_ms" in metrics


def test_too_little_canary_traffic_waits() -> None:
    report = _analyse(_traffic(_rows(100, variant="canary", version="2", seed=1)))

    assert report.verdict == "wait"
    assert report.reasons == ["100 rows routed to the canary, 300 needed"]


def test_a_failing_canary_is_rolled_back_for_its_error_rate() -> None:
    # The champion answered the rows the canary failed on: they are the canary's errors.
    failed = _rows(500, variant="champion", version="1", seed=2, failed_version="2")

    report = _analyse(_traffic(failed))

    assert report.verdict == "rollback"
    assert (report.routed, report.errors, report.error_rate) == (500, 500, 1.0)
    assert report.reasons[0].startswith("FAILED error rate 1.0000")
    assert report.champion_rows == 1400  # its own traffic, without the rows it covered


def test_a_degraded_canary_is_rolled_back_for_its_score_shift() -> None:
    constant = np.full(600, 0.9)

    report = _analyse(_traffic(_rows(600, variant="canary", version="2", seed=1, scores=constant)))

    assert report.verdict == "rollback"
    assert any(r.startswith("FAILED score PSI") for r in report.reasons)
    assert report.canary_decline_rate == 1.0


def test_the_score_shift_is_judged_against_what_offline_evaluation_measured() -> None:
    shifted = np.clip(np.random.default_rng(5).beta(1, 20, 600) + 0.5, 0, 1)
    served = _traffic(_rows(600, variant="canary", version="2", seed=1, scores=shifted))

    def verdict(expected: float | None) -> str:
        return analyse_canary(
            served,
            canary_version="2",
            champion_version="1",
            settings=SETTINGS,
            expected_psi=expected,
        ).verdict

    live = _analyse(served).score_psi
    assert live is not None and live > 3
    # A retrained model that scored this differently offline too: as expected.
    assert verdict(live - 0.5) == "promote"
    # One that scored like the champion offline but not live: broken.
    assert verdict(0.2) == "rollback"
    assert verdict(None) == "rollback"  # no expectation: the absolute cap


def test_a_slow_canary_is_rolled_back_but_small_noise_is_not() -> None:
    slow = _rows(600, variant="canary", version="2", seed=1, latency_ms=80.0)
    noisy = _rows(600, variant="canary", version="2", seed=1, latency_ms=7.0)

    assert _analyse(_traffic(slow)).verdict == "rollback"
    assert _analyse(_traffic(noisy)).verdict == "promote"  # 3.5x, but within 20 ms


def test_labels_judge_the_canary_only_with_enough_frauds() -> None:
    rng = np.random.default_rng(3)
    canary = _rows(600, variant="canary", version="2", seed=1)
    served = _traffic(canary)
    champion = served[served["variant"] == "champion"]
    # Frauds are the champion's highest scores but random among the canary's rows.
    frauds = set(champion.nlargest(30, "score")["transaction_id"])
    frauds |= set(rng.choice(canary["transaction_id"], 30, replace=False))

    judged = _analyse(served, frauds)
    unjudged = _analyse(served, set(list(frauds)[:3]))

    assert judged.verdict == "rollback"
    assert judged.labels["champion"]["pr_auc"] == pytest.approx(1.0)
    assert any(r.startswith("FAILED PR-AUC") for r in judged.reasons)
    assert unjudged.verdict == "promote"
    assert any(r.startswith("labels: not judged") for r in unjudged.reasons)


def test_labels_need_enough_accounts_with_a_fraud_not_fraud_rows() -> None:
    canary = _rows(600, variant="canary", version="2", seed=1)
    served = _traffic(canary)
    served["user_id"] = np.arange(len(served))  # every row its own account
    frauds = set(served.groupby("variant")["transaction_id"].head(30))
    burst = served.copy()  # the same frauds, on three cards per variant
    fraud_rows = burst["transaction_id"].isin(frauds).to_numpy()
    burst.loc[fraud_rows, "user_id"] = np.arange(fraud_rows.sum()) % 3 - 3

    spread, bursts = _analyse(served, frauds), _analyse(burst, frauds)

    assert spread.labels["canary"]["fraud_accounts"] == 30
    assert not any(r.startswith("labels: not judged") for r in spread.reasons)
    assert bursts.labels["canary"]["positives"] == 30
    assert bursts.labels["canary"]["fraud_accounts"] == 3
    assert any(r.startswith("labels: not judged") for r in bursts.reasons)


def test_rows_of_other_versions_are_not_evidence() -> None:
    older = _rows(600, variant="canary", version="7", seed=4)

    report = _analyse(_traffic(older))

    assert report.routed == 0 and report.verdict == "wait"


def test_no_traffic_at_all_waits() -> None:
    assert _analyse(pd.DataFrame()).verdict == "wait"
