"""The cluster bootstrap on hand-made labelled days whose frauds come in bursts.

Each fraud account (``user_id``) contributes a burst of rows whose scores share one
offset (the model ranks a whole card-testing burst alike), as in the simulator's card
testing and account takeovers, or of many accounts at one compromised merchant.
Resampling rows (or accounts, for a merchant) treats a burst as independent frauds; the
interval then reads day-to-day noise as significant, the campaign interval does not.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import pandas as pd

from driftline.core.evidence import (
    USER,
    campaigns,
    compromised_merchants,
    difference_interval,
    effective_positives,
    fraud_accounts,
    paired_difference_interval,
    pr_auc_interval,
    row_groups,
)
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.monitoring.drift import performance_check

DAYS = Interval.parse(date(2026, 2, 26), date(2026, 2, 28))
SAMPLES, CONFIDENCE = 200, 0.9

Day = tuple[np.ndarray, np.ndarray, np.ndarray]


def _bursty_day(
    seed: int, *, bursts: int = 6, per: int = 8, signal: float = 2.5, spread: float = 1.5
) -> Day:
    """3000 legitimate rows of 1500 accounts and ``bursts`` fraud accounts of ``per`` rows.

    Fraud logits are ``signal`` above the legitimate ones, plus one offset per burst
    (standard deviation ``spread``): the bursts, not the rows, are the independent draws.
    Returns ``(labels, scores, user_ids)``.
    """
    rng = np.random.default_rng(seed)
    legit = 3000
    users = rng.integers(0, 1500, legit) + seed * 100_000
    fraud_users = np.repeat(np.arange(bursts) + seed * 100_000 + 50_000, per)
    offsets = np.repeat(rng.normal(0.0, spread, bursts), per)
    logits = np.r_[
        rng.normal(-3.0, 1.0, legit),
        -3.0 + signal + offsets + rng.normal(0.0, 0.3, bursts * per),
    ]
    labels = np.r_[np.zeros(legit, dtype=np.int64), np.ones(bursts * per, dtype=np.int64)]
    return labels, 1.0 / (1.0 + np.exp(-logits)), np.r_[users, fraud_users]


def _excludes_zero(low: float | None, high: float | None) -> bool:
    assert low is not None and high is not None
    return high < 0.0 or low > 0.0


def _frame(day: Day, prefix: str, *, accounts: bool) -> tuple[pd.DataFrame, set[str]]:
    labels, scores, users = day
    ids = [f"{prefix}{i}" for i in range(labels.size)]
    frame = pd.DataFrame({"transaction_id": ids, "score": scores, "variant": "champion"})
    if accounts:
        frame[USER] = users
    return frame, {ids[i] for i in np.flatnonzero(labels)}


def _check(served: Day, reference: Day, *, accounts: bool, min_positives: int) -> dict[str, Any]:
    frame, frauds = _frame(served, "s", accounts=accounts)
    settings = Settings(
        drift_min_positives=min_positives,
        drift_performance_drop=0.25,
        drift_bootstrap_samples=SAMPLES,
        drift_confidence=CONFIDENCE,
    )
    evidence = (reference[0], reference[1], reference[2] if accounts else None)
    check: dict[str, Any] = performance_check(
        frame, frauds, days=DAYS, reference_pr_auc=None, settings=settings, reference=evidence
    )
    return check


def test_effective_positives_count_fraud_accounts() -> None:
    labels, _, users = _bursty_day(1, bursts=6, per=8)

    assert effective_positives(labels) == 48  # rows without groups
    assert effective_positives(labels, users) == 6  # one per fraud account
    assert effective_positives(np.zeros(3, dtype=np.int64), np.arange(3)) == 0


def test_cluster_intervals_are_wider_reproducible_and_paired() -> None:
    labels, scores, users = _bursty_day(2)

    rows = pr_auc_interval(labels, scores, samples=SAMPLES, confidence=CONFIDENCE)
    clustered = pr_auc_interval(
        labels, scores, samples=SAMPLES, confidence=CONFIDENCE, groups=users
    )
    again = pr_auc_interval(labels, scores, samples=SAMPLES, confidence=CONFIDENCE, groups=users)
    paired = paired_difference_interval(
        labels, scores, scores, samples=SAMPLES, confidence=CONFIDENCE, groups=users
    )

    assert clustered == again  # fixed seed
    assert clustered.clustered and not rows.clustered and clustered.positives == 6
    assert rows.low is not None and rows.high is not None
    assert clustered.low is not None and clustered.high is not None
    assert clustered.value == rows.value  # the estimate itself is row-wise
    assert clustered.high - clustered.low > 1.5 * (rows.high - rows.low)
    assert paired.value == 0.0 and paired.low == paired.high == 0.0  # same drawn groups


def test_noise_between_bursty_days_is_significant_by_rows_but_not_by_accounts() -> None:
    reference = _bursty_day(1)
    by_rows = by_accounts = 0
    for seed in range(2, 11):  # the same process each day: no drift
        day = _bursty_day(seed)
        rows = difference_interval(day[:2], reference[:2], samples=SAMPLES, confidence=CONFIDENCE)
        clustered = difference_interval(
            day[:2],
            reference[:2],
            samples=SAMPLES,
            confidence=CONFIDENCE,
            groups_a=day[2],
            groups_b=reference[2],
        )
        by_rows += _excludes_zero(rows.low, rows.high)
        by_accounts += _excludes_zero(clustered.low, clustered.high)

    # A 90% interval should exclude zero on about 1 of 9 no-drift days.
    assert by_rows >= 3
    assert by_accounts <= 1


def test_performance_check_no_drift_bursty_day_is_not_degraded_by_accounts() -> None:
    reference, served = _bursty_day(1), _bursty_day(3)

    by_rows = _check(served, reference, accounts=False, min_positives=5)
    by_accounts = _check(served, reference, accounts=True, min_positives=5)

    assert by_rows["verdict"] == "degraded"  # 48 "independent" frauds
    assert by_accounts["verdict"] != "degraded" and not by_accounts["drifted"]
    assert by_accounts["clustered"] and by_accounts["fraud_accounts"] == 6
    assert by_accounts["difference"]["high"] >= 0.0
    assert "rows resampled" in by_rows["note"] and "rows resampled" not in by_accounts["note"]


def test_performance_check_counts_fraud_accounts_against_min_positives() -> None:
    reference, served = _bursty_day(1), _bursty_day(3)  # 48 fraud rows from 6 accounts

    check = _check(served, reference, accounts=True, min_positives=20)

    assert check["verdict"] == "insufficient_evidence" and check["positives"] == 48
    assert "6 labelled frauds (48 rows)" in check["note"]


def test_a_real_drop_spread_over_many_accounts_is_still_degraded() -> None:
    reference = _bursty_day(1, bursts=60, per=2, signal=3.0, spread=0.5)
    served = _bursty_day(4, bursts=60, per=2, signal=1.0, spread=0.5)

    check = _check(served, reference, accounts=True, min_positives=20)

    assert check["clustered"] and check["fraud_accounts"] == 60
    assert check["verdict"] == "degraded" and check["drifted"]
    assert check["difference"]["high"] < 0.0


def _merchant_day(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, accounts and merchants of a day: 3,000 legitimate rows of 600 accounts at
    100 merchants, 12 victims (accounts 9000-9011) defrauded at merchant 7 among its
    other customers, and 20 independent frauds (accounts 9100-9119) at random merchants,
    two of them (9100, 9101) at the busy merchant 3."""
    rng = np.random.default_rng(seed)
    users = np.r_[rng.integers(0, 600, 3000), 9000 + np.arange(12), 9100 + np.arange(20)]
    shops = np.r_[rng.integers(0, 100, 3000), np.full(12, 7), [3, 3], rng.integers(10, 100, 18)]
    labels = np.r_[np.zeros(3000, dtype=np.int64), np.ones(32, dtype=np.int64)]
    return labels, users, shops


def test_campaigns_merge_the_victims_of_a_compromised_merchant_only() -> None:
    labels, users, merchants = _merchant_day(5)
    groups = campaigns(labels, users, merchants)
    frame = pd.DataFrame({USER: users, "merchant_id": merchants})
    victim = (users >= 9000) & (users < 9012)
    independent = users >= 9100

    assert compromised_merchants(labels, users, merchants)[victim].all()
    assert not compromised_merchants(labels, users, merchants)[merchants == 3].any()
    assert len(set(groups[victim])) == 1  # one campaign
    assert len(set(groups[independent])) == 20  # two frauds at a busy shop: still two
    assert effective_positives(labels, groups) == 21
    assert fraud_accounts(frame, labels) == 32  # what minimums count: the victims
    assert (row_groups(frame, labels) == groups).all()
    assert (campaigns(labels, users) == campaigns(np.zeros(labels.size), users, merchants)).all()
    assert row_groups(frame.drop(columns=[USER]), labels) is None


def test_two_frauds_sharing_a_merchant_are_not_a_campaign_by_themselves() -> None:
    # Accounts 1 and 2 defrauded at merchant 9, where 40 other accounts shop: chance
    # explains two victims of 42 when 1 account in 20 is defrauded somewhere.
    rng = np.random.default_rng(0)
    users = np.r_[np.arange(3, 43), rng.integers(43, 400, 800), [1, 2], 400 + np.arange(20)]
    merchants = np.r_[np.full(40, 9), rng.integers(10, 60, 800), [9, 9], rng.integers(10, 60, 20)]
    labels = np.r_[np.zeros(840, dtype=np.int64), np.ones(22, dtype=np.int64)]

    groups = campaigns(labels, users, merchants)

    assert groups[-22] != groups[-21]
    assert effective_positives(labels, groups) == 22


def _compromise_day(seed: int, *, merchants: int = 6, victims: int = 8) -> pd.DataFrame:
    """As :func:`_bursty_day`, the frauds one row per victim account at ``merchants``
    compromised merchants (one score offset per merchant): ``label``, ``score``,
    ``user_id``, ``merchant_id``."""
    rng = np.random.default_rng(seed)
    legit, frauds = 3000, merchants * victims
    offsets = np.repeat(rng.normal(0.0, 1.5, merchants), victims)
    logits = np.r_[rng.normal(-3.0, 1.0, legit), -0.5 + offsets + rng.normal(0.0, 0.3, frauds)]
    base = seed * 100_000
    return pd.DataFrame(
        {
            "label": np.r_[np.zeros(legit, dtype=np.int64), np.ones(frauds, dtype=np.int64)],
            "score": 1.0 / (1.0 + np.exp(-logits)),
            USER: np.r_[rng.integers(0, 1500, legit), 50_000 + np.arange(frauds)] + base,
            "merchant_id": np.r_[
                rng.integers(0, 400, legit), 90_000 + np.repeat(np.arange(merchants), victims)
            ]
            + base,
        }
    )


def test_noise_from_compromised_merchants_needs_campaigns_not_accounts() -> None:
    by_accounts = by_campaigns = 0
    for pair in range(1, 11):  # 10 independent no-drift pairs of days
        day, other = _compromise_day(2 * pair), _compromise_day(2 * pair + 1)
        sides = []
        for merchant in (False, True):
            frames = [f if merchant else f.drop(columns=["merchant_id"]) for f in (day, other)]
            groups = [row_groups(f, f["label"].to_numpy()) for f in frames]
            sides.append(
                difference_interval(
                    (day["label"].to_numpy(), day["score"].to_numpy()),
                    (other["label"].to_numpy(), other["score"].to_numpy()),
                    samples=SAMPLES,
                    confidence=CONFIDENCE,
                    groups_a=groups[0],
                    groups_b=groups[1],
                )
            )
        by_accounts += _excludes_zero(sides[0].low, sides[0].high)
        by_campaigns += _excludes_zero(sides[1].low, sides[1].high)
        assert sides[1].positives == 6 and sides[0].positives == 48

    # A 90% interval should exclude zero on about 1 pair in 10 (measured: 5 by
    # accounts, 2 by campaigns here; 11 and 3 of 20 pairs). Six campaigns a side leave
    # the percentile interval a little narrow, hence the margin.
    assert by_accounts >= 4  # one account per fraud row: as narrow as rows
    assert by_campaigns <= 2
