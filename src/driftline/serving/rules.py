"""The rule-based score: the last link of the fallback chain, when no model can answer.

When the champion fails on a request and the previous champion (kept loaded for this)
fails too or is not there, the service still answers, with this documented score
instead of an error. It is a fixed logistic score over request fields and store
features, written from the fraud patterns the model learns (large amounts relative to
the user's habits, a new device, a merchant with recent chargebacks, card-not-present
categories, night hours); it never needs a model artifact, and a missing feature simply
adds nothing. Responses and log lines answered by it say ``answered_by: rules`` and
``model_version`` :data:`VERSION`.

``score = sigmoid(BASE_LOGIT + sum of the weights of the rules that hold)``:

======================================================  =======
rule                                                    weight
======================================================  =======
amount >= 1000                                          +1.5
amount >= 300 (and < 1000)                              +0.7
amount > 3 x the user's 7-day mean amount               +1.2
amount > the user's largest amount of the last 24 h     +0.5
the user's device is new                                +0.8
merchant's 14-day fraud rate >= 5%                      +1.5
category electronics, digital_goods or gaming           +0.5
online (card not present)                               +0.4
hour 00-05 UTC                                          +0.5
======================================================  =======

With the base logit of -4 a transaction matching nothing scores 0.018 (about the fraud
base rate); every rule raises the score, so a larger amount never lowers it, as for the
models.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: ``model_version`` of answers given by the rules (bumped whenever a weight changes).
VERSION = "rules-1"
BASE_LOGIT = -4.0
LARGE_AMOUNT, MEDIUM_AMOUNT = 1000.0, 300.0
RISKY_CATEGORIES = ("electronics", "digital_goods", "gaming")
NIGHT_HOURS = 6  # hours 0..5 UTC
RISKY_MERCHANT_RATE = 0.05


def _numbers(columns: dict[str, Any], name: str) -> np.ndarray:
    """Column ``name`` as float64 (missing values NaN, so every rule on them is false)."""
    return np.asarray(columns[name], dtype=np.float64)


def score(columns: dict[str, Any]) -> np.ndarray:
    """Rule-based fraud score per row of model-input ``columns``, float64 in (0, 1)."""
    amount = _numbers(columns, "amount")
    hour = _numbers(columns, "hour_of_day")
    mean_7d = _numbers(columns, "user_amount_mean_7d")
    max_24h = _numbers(columns, "user_amount_max_24h")
    new_device = _numbers(columns, "user_new_device")
    merchant_rate = _numbers(columns, "merchant_fraud_rate_14d")
    category = np.array([c in RISKY_CATEGORIES for c in columns["merchant_category"]], dtype=bool)
    online = np.array([c == "online" for c in columns["channel"]], dtype=bool)
    with np.errstate(invalid="ignore"):
        logit = (
            BASE_LOGIT
            + np.where(amount >= LARGE_AMOUNT, 1.5, np.where(amount >= MEDIUM_AMOUNT, 0.7, 0.0))
            + np.where(amount > 3.0 * mean_7d, 1.2, 0.0)
            + np.where(amount > max_24h, 0.5, 0.0)
            + np.where(new_device >= 1.0, 0.8, 0.0)
            + np.where(merchant_rate >= RISKY_MERCHANT_RATE, 1.5, 0.0)
            + np.where(category, 0.5, 0.0)
            + np.where(online, 0.4, 0.0)
            + np.where(hour < NIGHT_HOURS, 0.5, 0.0)
        )
    return np.asarray(1.0 / (1.0 + np.exp(-logit)), dtype=np.float64)
