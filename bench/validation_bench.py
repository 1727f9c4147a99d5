"""How long one GX validation takes: data docs views with compiled templates kept vs GX's.

Every validation runs its suite's checkpoint, whose ``update_data_docs`` action renders
the new result's page and the index. GX builds new views, and so new Jinja environments,
for every docs update: each one compiles GX's templates again. ``driftline.data.gx_views``
keeps the compiled templates in a process-wide cache. Measured here, in one process,
on the same 3000-row transactions batch (``raw_transactions``, the simulator's day):

* **cached** (the default): the cache as it is after the first validation;
* **recompiled** (the named baseline, GX's own behaviour): the cache emptied before each
  validation, so every docs build compiles the templates, as GX's views do.

The two alternate, one untimed validation first. The result (medians, p90, the ratio
recompiled / cached) goes to ``--out`` (default ``bench/results/validation.json``).

Usage::

    python bench/validation_bench.py [--repeats 15] [--out bench/results/validation.json]
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_common import machine, parse_options, write_result

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.validate import validate_frame
from driftline.simulator import SimulatorConfig, write_landing

DAY = Interval.parse("2026-01-05", "2026-01-06")
ROWS = 3000
SUITE = "raw_transactions"


def _batch(settings: Settings) -> Any:
    """The simulator's transactions of :data:`DAY` as the ingest stage validates them."""
    write_landing(SimulatorConfig(rows_per_day=ROWS), DAY, settings.lake_uri)
    folder = f"{settings.lake_uri}/landing/transactions/dt={DAY.start.date()}"
    fs, root = lake.filesystem(folder)
    return lake.read_file(fs.ls(root)[0])


def _timed(batch: Any, settings: Settings) -> float:
    started = time.perf_counter()
    outcome = validate_frame(batch, SUITE, DAY, settings)
    elapsed = time.perf_counter() - started
    if not outcome.success:
        raise SystemExit(f"the batch failed {SUITE}: {outcome.failed_expectations}")
    return elapsed


def _summary(times: list[float]) -> dict[str, float]:
    ordered = sorted(times)
    return {
        "median_s": round(statistics.median(ordered), 3),
        "p90_s": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
        "min_s": round(ordered[0], 3),
    }


def run(repeats: int) -> dict[str, Any]:
    """Both modes measured; the JSON result."""
    from driftline.data.gx_views import BYTECODE

    load_before = os.getloadavg()
    times: dict[str, list[float]] = {"cached": [], "recompiled": []}
    with tempfile.TemporaryDirectory(prefix="validation-bench-") as tmp:
        settings = Settings(home=Path(tmp))
        batch = _batch(settings)
        _timed(batch, settings)  # GX imported, the context and checkpoint built
        for _ in range(repeats):
            times["cached"].append(_timed(batch, settings))
            BYTECODE.clear()
            times["recompiled"].append(_timed(batch, settings))
    cached, baseline = _summary(times["cached"]), _summary(times["recompiled"])
    return {
        "benchmark": "validation",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "baseline": "recompiled (GX's views: templates compiled on every data docs build)",
        "suite": SUITE,
        "rows": ROWS,
        "repeats": repeats,
        "machine": machine(load_before),
        "cached": cached,
        "recompiled": baseline,
        "ratio_recompiled_over_cached_median": round(baseline["median_s"] / cached["median_s"], 2),
    }


def main() -> None:
    """Parse the options, run, print and write the result."""
    args = parse_options(__doc__, repeats=15, out="bench/results/validation.json")
    result = run(args.repeats)
    write_result(args.out, result)
    print(
        f"validation of {ROWS} rows: cached {result['cached']['median_s']:.2f} s median, "
        f"recompiled {result['recompiled']['median_s']:.2f} s "
        f"({result['ratio_recompiled_over_cached_median']}x)"
    )


if __name__ == "__main__":
    main()
