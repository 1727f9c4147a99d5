"""Synthetic labelled model frames (see :mod:`driftline.core.columns`).

Fraud follows simulator-like patterns (large amounts at foreign merchants from new
devices, bursts of tiny online amounts, compromised merchants with a high recent fraud
rate), so a model that learns anything beats the base rate by a wide margin. Used by the
fast unit tests and the tuning benchmark where building a real training set through the
lake and Feast would dominate the run. Deterministic per seed; 5% of rows miss their
store features, as entities without history do.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from driftline.core.columns import FRESH_NUMERIC, LABEL, STORE_NUMERIC
from driftline.core.schemas import CHANNELS, COUNTRIES, CURRENCIES, MERCHANT_CATEGORIES


def model_frame(
    n: int = 4000,
    seed: int = 0,
    fraud_rate: float = 0.03,
    *,
    users: int = 500,
    merchants: int = 200,
    days: int = 14,
) -> pd.DataFrame:
    """``n`` labelled rows (ordered by time) with every model input, keys and ``label``."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < fraud_rate
    kind = rng.integers(0, 3, n)  # 0 takeover, 1 card testing, 2 merchant compromise
    amount = np.exp(rng.normal(3.5, 0.8, n))
    amount = np.where(fraud & (kind == 0), amount * rng.uniform(4, 10, n), amount)
    amount = np.where(fraud & (kind == 1), rng.uniform(0.5, 5, n), amount)
    frame = pd.DataFrame(
        {
            "transaction_id": [f"t{seed}-{i}" for i in range(n)],
            "user_id": rng.integers(1, users, n),
            "merchant_id": rng.integers(1, merchants, n),
            "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.sort(rng.integers(0, days * 86400, n)), unit="s"),
            "amount": amount.round(2),
            "hour_of_day": rng.integers(0, 24, n).astype(float),
            "merchant_category": rng.choice(MERCHANT_CATEGORIES, n),
            "merchant_country": np.where(
                fraud & (kind == 0), rng.choice(["NG", "BR", "RU"], n), rng.choice(COUNTRIES, n)
            ),
            "channel": np.where(fraud & (kind == 1), "online", rng.choice(CHANNELS, n)),
            "currency": rng.choice(CURRENCIES, n),
        }
    )
    for name in STORE_NUMERIC:
        frame[name] = rng.gamma(2.0, 2.0, n)
    frame["user_new_device"] = np.where(fraud & (kind == 0), 1, rng.random(n) < 0.05).astype(float)
    frame["user_txn_count_1h"] = np.where(
        fraud & (kind == 1), rng.integers(5, 20, n), rng.poisson(0.3, n)
    ).astype(float)
    frame["merchant_fraud_rate_14d"] = np.where(
        fraud & (kind == 2), rng.uniform(0.05, 0.2, n), rng.uniform(0, 0.01, n)
    )
    frame.loc[rng.random(n) < 0.05, list(STORE_NUMERIC)] = np.nan
    _add_fresh(frame, rng, fraud, kind)
    frame[LABEL] = fraud.astype(np.int64)
    return frame


def _add_fresh(
    frame: pd.DataFrame, rng: np.random.Generator, fraud: np.ndarray, kind: np.ndarray
) -> None:
    """Fresh features (complete: computed from the event state, never missing)."""
    n = len(frame)
    for name in FRESH_NUMERIC:
        frame[name] = rng.poisson(1.0, n).astype(float)
    testing, takeover = fraud & (kind == 1), fraud & (kind == 0)
    frame["fresh_user_txn_count_10m"] = np.where(
        testing, rng.integers(3, 15, n), rng.poisson(0.1, n)
    ).astype(float)
    frame["fresh_user_device_new"] = np.where(takeover, 1, rng.random(n) < 0.05).astype(float)
    frame["fresh_user_country_foreign"] = np.where(takeover, 1, rng.random(n) < 0.1).astype(float)
    frame["fresh_user_amount_to_median_7d"] = frame["amount"] / np.exp(3.5)
    frame["fresh_user_seconds_since_prev"] = np.where(
        testing, rng.uniform(1, 120, n), np.minimum(rng.exponential(20_000, n), 604_800)
    )
