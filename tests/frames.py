"""Synthetic model frames (see ``driftline.training.columns``) for fast unit tests.

Fraud depends on a few inputs the way the simulator's patterns do (large amounts at
foreign merchants from new devices, bursts of tiny online amounts, risky merchants),
so a model that learns anything beats the base rate by a wide margin. Deterministic
per seed; features are sometimes missing (NaN) as they are for entities without
history.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from driftline.schemas import CHANNELS, COUNTRIES, CURRENCIES, MERCHANT_CATEGORIES
from driftline.training.columns import LABEL, STORE_NUMERIC


def model_frame(n: int = 4000, seed: int = 0, fraud_rate: float = 0.03) -> pd.DataFrame:
    """Return ``n`` labelled rows with every model input, keys and a ``label`` column."""
    rng = np.random.default_rng(seed)
    fraud = rng.random(n) < fraud_rate
    kind = rng.integers(0, 3, n)  # 0 takeover, 1 card testing, 2 merchant compromise
    amount = np.exp(rng.normal(3.5, 0.8, n))
    amount = np.where(fraud & (kind == 0), amount * rng.uniform(4, 10, n), amount)
    amount = np.where(fraud & (kind == 1), rng.uniform(0.5, 5, n), amount)
    frame = pd.DataFrame(
        {
            "transaction_id": [f"t{seed}-{i}" for i in range(n)],
            "user_id": rng.integers(1, 500, n),
            "merchant_id": rng.integers(1, 200, n),
            "event_timestamp": pd.Timestamp("2026-01-01", tz="UTC")
            + pd.to_timedelta(np.sort(rng.integers(0, 14 * 86400, n)), unit="s"),
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
    missing = rng.random(n) < 0.05
    frame.loc[missing, list(STORE_NUMERIC)] = np.nan
    frame[LABEL] = fraud.astype(np.int64)
    return frame
