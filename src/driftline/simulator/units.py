"""Array types and time units shared by the simulator's modules (times are in
microseconds, as Arrow's ``timestamp[us, UTC]`` stores them)."""

from __future__ import annotations

from datetime import date

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

SECOND_US = 1_000_000
MINUTE_US = 60 * SECOND_US
HOUR_US = 60 * MINUTE_US
DAY_US = 24 * HOUR_US
EPOCH = date(1970, 1, 1)


def day_start_us(day: date) -> int:
    """Microseconds since the epoch at ``day`` 00:00 UTC."""
    return (day - EPOCH).days * DAY_US
