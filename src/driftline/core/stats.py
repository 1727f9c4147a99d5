"""Statistics shared by the planes (one definition each)."""

from __future__ import annotations

import numpy as np

#: Quantile bins of the PSI (on the champion's scores).
PSI_BINS = 10
_PSI_EPSILON = 1e-4


def psi(expected: np.ndarray, actual: np.ndarray, bins: int = PSI_BINS) -> float:
    """Population stability index of ``actual`` against ``expected`` (quantile bins).

    Bin edges are the quantiles of ``expected`` (ties merged); empty bins get a small
    epsilon so the index stays finite. 0 means identical distributions.

    Raises:
        ValueError: If either sample is empty.
    """
    if expected.size == 0 or actual.size == 0:
        raise ValueError("PSI needs two non-empty samples")
    inner = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    e = np.bincount(np.searchsorted(inner, expected, side="right"), minlength=inner.size + 1)
    a = np.bincount(np.searchsorted(inner, actual, side="right"), minlength=inner.size + 1)
    e_share = np.maximum(e / expected.size, _PSI_EPSILON)
    a_share = np.maximum(a / actual.size, _PSI_EPSILON)
    return float(np.sum((a_share - e_share) * np.log(a_share / e_share)))
