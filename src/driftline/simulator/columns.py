"""Arrow columns the landing tables share: event times and transaction ids."""

from __future__ import annotations

from datetime import date

import pyarrow as pa
import pyarrow.compute as pc

from driftline.core import schemas
from driftline.simulator.units import IntArray


def timestamps(values: IntArray) -> pa.Array:
    """Arrow ``timestamp[us, UTC]`` array from epoch microseconds."""
    return pa.array(values, type=pa.int64()).cast(schemas.TIMESTAMP)


def transaction_ids(day: date, positions: IntArray) -> pa.Array:
    """Ids ``t{YYYYMMDD}{position:08d}``."""
    digits = pc.utf8_lpad(pa.array(positions, type=pa.int64()).cast(pa.string()), 8, "0")
    return pc.binary_join_element_wise(f"t{day:%Y%m%d}", digits, "")
