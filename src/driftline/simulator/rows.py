"""Transactions of one day as parallel arrays, their fraud codes and times of day."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from driftline.simulator.units import HOUR_US, BoolArray, FloatArray, IntArray

#: ``fraud_type`` values of the ground truth; index 0 is legit.
FRAUD_TYPES = ("", "card_testing", "account_takeover", "merchant_compromise", "bust_out")
#: Codes of :attr:`Rows.fraud` (indices into :data:`FRAUD_TYPES`).
LEGIT, CARD_TESTING, ACCOUNT_TAKEOVER, MERCHANT_COMPROMISE, BUST_OUT = range(5)

#: Relative transaction volume per hour of day (UTC): quiet nights, midday and evening peaks.
# fmt: off
_HOUR_PROFILE = np.array(
    [0.8, 0.5, 0.35, 0.3, 0.35, 0.6, 1.2, 2.2, 3.2, 3.8, 4.2, 4.8,
     5.6, 5.4, 4.6, 4.3, 4.6, 5.4, 6.2, 6.4, 5.6, 4.2, 2.8, 1.6]
)
# fmt: on
_HOUR_CDF = np.cumsum(_HOUR_PROFILE) / _HOUR_PROFILE.sum()


@dataclass(frozen=True)
class Rows:
    """Transactions as parallel arrays (``ts`` in microseconds since the day's start)."""

    user: IntArray
    card: IntArray
    merchant: IntArray
    ts: IntArray
    amount: FloatArray
    new_device: BoolArray
    device: IntArray
    fraud: IntArray

    @staticmethod
    def concat(parts: list[Rows]) -> Rows:
        """Concatenate row blocks."""
        names = Rows.__dataclass_fields__
        return Rows(**{name: np.concatenate([getattr(p, name) for p in parts]) for name in names})

    def take(self, index: IntArray) -> Rows:
        """Rows at ``index``."""
        names = Rows.__dataclass_fields__
        return Rows(**{name: getattr(self, name)[index] for name in names})


def sample_times(rng: np.random.Generator, n: int) -> IntArray:
    """``n`` times of day (microseconds) following the hour-of-day profile."""
    hours = np.minimum(np.searchsorted(_HOUR_CDF, rng.random(n), side="right"), 23)
    return hours.astype(np.int64) * HOUR_US + rng.integers(0, HOUR_US, n)
