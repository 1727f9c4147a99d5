"""Feature-job throughput: Spark ``local[*]`` versus a single-process DuckDB reference.

One simulated day (the simulator's anchor day, so there is no look-back data) is
written as Parquet to a temporary folder. Both engines then compute the same
canonical feature table from those files in the same process:

* **Spark** (the production path): session start is timed on its own, then
  ``spark.read.parquet`` + :func:`driftline.data.features.compute_features` +
  ``toArrow()`` + :func:`driftline.data.features.to_canonical`, run twice (cold, warm).
* **DuckDB** (``duckdb_single_process``): ``pyarrow.parquet.read_table`` +
  :func:`driftline.data.reference.compute_features_reference`, run twice.

Every Spark output is checked against the reference (same rows, values within
``rtol=1e-9``); the benchmark fails loudly if they differ.

Where Spark's time goes is measured with Spark's own bookkeeping: per-stage
metrics from the status store (tasks, executor run/CPU/GC time, input records, shuffle
bytes), the time no stage was running (driver: planning, scheduling, Arrow
transfer), the node histogram of the executed (adaptive, final) plan, and two
extra runs into Spark's ``noop`` sink that isolate the Parquet scan and the
compute without the result transfer.

Usage::

    python bench/features_bench.py [--rows 1000000] [--out bench/results/features.json]
                                   [--shuffle-partitions N] [--sweep-shuffle-partitions 2,16]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import resource
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pyspark
from bench_common import host

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.features import compute_features, to_canonical
from driftline.data.reference import compute_features_reference
from driftline.data.spark import get_spark
from driftline.simulator import SimulatorConfig, simulate_labels, simulate_transactions

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

T = TypeVar("T")

ANCHOR = date(2026, 1, 1)
BASELINE = "duckdb_single_process"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "features.json"
MB = 1024 * 1024


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def timed(fn: Callable[[], T]) -> tuple[T, float]:
    """Call ``fn`` and return its result and the elapsed wall-clock seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def rate(rows: int, seconds: float) -> float:
    """Rows per second (0 when ``seconds`` is not positive)."""
    return rows / seconds if seconds > 0 else 0.0


def parse_partitions(text: str) -> list[int]:
    """Parse a comma-separated list of positive shuffle-partition counts."""
    values = [int(v) for v in text.split(",") if v.strip()]
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("shuffle partitions must be positive")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(
        description="Feature job throughput: Spark local[*] vs single-process DuckDB reference."
    )
    parser.add_argument("--rows", type=int, default=1_000_000, help="Simulated rows per day.")
    parser.add_argument("--seed", type=int, default=7, help="Simulator seed.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file.")
    parser.add_argument(
        "--shuffle-partitions",
        type=int,
        default=None,
        help="spark.sql.shuffle.partitions (default: the project Settings' default).",
    )
    parser.add_argument(
        "--sweep-shuffle-partitions",
        type=parse_partitions,
        default=[],
        metavar="N[,N...]",
        help="Extra warm Spark runs at these shuffle-partition counts (checked, timed only).",
    )
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be positive")
    if args.shuffle_partitions is not None and args.shuffle_partitions < 1:
        parser.error("--shuffle-partitions must be positive")
    return args


def assert_identical(expected: pd.DataFrame, got: pa.Table, label: str) -> None:
    """Fail loudly unless ``got`` has the reference's rows and values (rtol 1e-9)."""
    frame = got.to_pandas()
    if len(frame) != len(expected):
        raise AssertionError(f"{label}: {len(frame)} rows, reference has {len(expected)}")
    try:
        pd.testing.assert_frame_equal(frame, expected, check_exact=False, rtol=1e-9)
    except AssertionError as exc:
        raise AssertionError(f"{label}: output differs from {BASELINE}: {exc}") from exc


def peak_rss_mb(pid: int | None = None) -> float | None:
    """Peak resident memory (MiB) of this process, or of ``pid`` via /proc (Linux)."""
    if pid is None:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


# --------------------------------------------------------------------------------------
# Input data
# --------------------------------------------------------------------------------------


def write_inputs(folder: Path, rows: int, seed: int) -> tuple[str, str, dict[str, Any]]:
    """Simulate the anchor day (transactions + labels) and write both as Parquet."""
    config = SimulatorConfig(seed=seed, rows_per_day=rows, anchor=ANCHOR)
    (transactions, _truth), simulate_s = timed(lambda: simulate_transactions(config, ANCHOR))
    labels = simulate_labels(config, ANCHOR)
    tx_path = str(folder / "transactions.parquet")
    labels_path = str(folder / "labels.parquet")
    _, write_s = timed(lambda: lake.write_file(tx_path, transactions))
    lake.write_file(labels_path, labels)
    meta = pq.ParquetFile(tx_path).metadata
    info = {
        "transactions": transactions.num_rows,
        "labels": labels.num_rows,
        "transactions_parquet_mb": round(os.path.getsize(tx_path) / MB, 2),
        "transactions_row_groups": meta.num_row_groups,
        "simulate_s": round(simulate_s, 3),
        "write_parquet_s": round(write_s, 3),
    }
    return tx_path, labels_path, info


# --------------------------------------------------------------------------------------
# DuckDB reference
# --------------------------------------------------------------------------------------


def run_reference(
    tx_path: str, labels_path: str, interval: Interval
) -> tuple[pa.Table, dict[str, float]]:
    """One reference run: read both files with pyarrow, compute with DuckDB."""
    (tx, labels), read_s = timed(lambda: (pq.read_table(tx_path), pq.read_table(labels_path)))
    table, compute_s = timed(lambda: compute_features_reference(tx, labels, interval))
    return table, {"read_s": read_s, "compute_s": compute_s, "total_s": read_s + compute_s}


# --------------------------------------------------------------------------------------
# Spark
# --------------------------------------------------------------------------------------


def spark_features(
    spark: SparkSession, tx_path: str, labels_path: str, interval: Interval
) -> DataFrame:
    """The production feature DataFrame over the two Parquet files."""
    return compute_features(spark.read.parquet(tx_path), spark.read.parquet(labels_path), interval)


@contextlib.contextmanager
def job_group(spark: SparkSession, group: str) -> Iterator[None]:
    """Tag the Spark jobs started inside the block with ``group``."""
    spark.sparkContext.setJobGroup(group, group)
    try:
        yield
    finally:
        spark.sparkContext.setLocalProperty("spark.jobGroup.id", None)  # type: ignore[arg-type]


def _settle(spark: SparkSession, group: str, timeout_s: float = 10.0) -> None:
    """Wait until the listener bus has recorded every job of ``group`` as finished."""
    tracker = spark.sparkContext.statusTracker()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        infos = [tracker.getJobInfo(j) for j in tracker.getJobIdsForGroup(group)]
        if all(i is not None and i.status in ("SUCCEEDED", "FAILED") for i in infos):
            return
        time.sleep(0.05)


def _busy_seconds(intervals: list[tuple[float, float]], start: float, end: float) -> float:
    """Length of the union of ``intervals`` clipped to ``[start, end]`` (epoch seconds)."""
    total, reach = 0.0, start
    for lo, hi in sorted(intervals):
        lo, hi = max(lo, reach), min(hi, end)
        if hi > lo:
            total += hi - lo
            reach = hi
    return total


def stage_metrics(spark: SparkSession, group: str, start: float, end: float) -> dict[str, Any]:
    """Spark's own per-stage metrics for the jobs of ``group`` (run between start and end).

    Uses the application status store (what the Spark UI shows), reached through
    py4j; it is internal API, so any failure is reported rather than raised.
    """
    _settle(spark, group)
    sc = spark.sparkContext
    tracker = sc.statusTracker()
    try:
        store = sc._jsc.sc().statusStore()
        stages: list[dict[str, Any]] = []
        spans: list[tuple[float, float]] = []
        jobs = sorted(tracker.getJobIdsForGroup(group))
        for job_id in jobs:
            info = tracker.getJobInfo(job_id)
            for stage_id in sorted(info.stageIds) if info is not None else []:
                s = store.lastStageAttempt(stage_id)
                status = str(s.status())
                if status != "COMPLETE":
                    stages.append({"job": job_id, "stage": stage_id, "status": status})
                    continue
                lo = s.submissionTime().get().getTime() / 1000
                hi = s.completionTime().get().getTime() / 1000
                spans.append((lo, hi))
                stages.append(
                    {
                        "job": job_id,
                        "stage": stage_id,
                        "status": status,
                        "tasks": int(s.numTasks()),
                        "wall_s": round(hi - lo, 3),
                        "executor_run_s": round(s.executorRunTime() / 1000, 3),
                        "executor_cpu_s": round(s.executorCpuTime() / 1e9, 3),
                        "jvm_gc_s": round(s.jvmGcTime() / 1000, 3),
                        "task_deserialize_s": round(s.executorDeserializeTime() / 1000, 3),
                        "input_records": int(s.inputRecords()),
                        "shuffle_read_mb": round(s.shuffleReadBytes() / MB, 2),
                        "shuffle_write_mb": round(s.shuffleWriteBytes() / MB, 2),
                        "spill_disk_mb": round(s.diskBytesSpilled() / MB, 2),
                    }
                )
    except Exception as exc:  # internal API: never let it sink the benchmark
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    done = [s for s in stages if s["status"] == "COMPLETE"]

    def total(key: str) -> float:
        return round(sum(float(s[key]) for s in done), 3)

    busy = _busy_seconds(spans, start, end)
    return {
        "jobs": len(jobs),
        "stages_completed": len(done),
        "stages_skipped": len(stages) - len(done),
        "tasks": int(total("tasks")),
        "executor_run_s": total("executor_run_s"),
        "executor_cpu_s": total("executor_cpu_s"),
        "jvm_gc_s": total("jvm_gc_s"),
        "task_deserialize_s": total("task_deserialize_s"),
        "input_records": int(total("input_records")),
        "shuffle_write_mb": total("shuffle_write_mb"),
        "spill_disk_mb": total("spill_disk_mb"),
        "stages_running_wall_s": round(busy, 3),
        "no_stage_running_wall_s": round((end - start) - busy, 3),
        "stages": stages,
    }


def plan_nodes(df: DataFrame) -> dict[str, int]:
    """Histogram of operators in the executed plan (AQE's final plan once it ran)."""
    plan = str(df._jdf.queryExecution().executedPlan().toString())
    final = plan.split("== Final Plan ==", 1)[-1].split("== Initial Plan ==", 1)[0]
    counts: Counter[str] = Counter()
    for line in final.splitlines():
        node = re.sub(r"^[\s:+|-]*(\*\(\d+\)\s*)?", "", line).split(" ", 1)[0]
        if node and node[0].isalpha() and node != "AdaptiveSparkPlan":
            counts[node] += 1
    return dict(sorted(counts.items()))


def run_spark(
    spark: SparkSession, tx_path: str, labels_path: str, interval: Interval, label: str
) -> tuple[pa.Table, dict[str, Any]]:
    """One Spark run: read Parquet + compute + ``toArrow()`` + ``to_canonical``."""
    epoch_start = time.time()
    with job_group(spark, label):
        df, build_s = timed(lambda: spark_features(spark, tx_path, labels_path, interval))
        arrow, execute_s = timed(df.toArrow)
    epoch_end = time.time()
    table, canonical_s = timed(lambda: to_canonical(arrow))
    result = {
        "build_dataframe_s": build_s,
        "execute_to_arrow_s": execute_s,
        "to_canonical_s": canonical_s,
        "total_s": build_s + execute_s + canonical_s,
        "plan_nodes": plan_nodes(df),
        "spark_metrics": stage_metrics(spark, label, epoch_start, epoch_end),
    }
    return table, result


def noop_seconds(spark: SparkSession, df: DataFrame, label: str) -> tuple[float, dict[str, Any]]:
    """Run ``df`` fully into Spark's ``noop`` sink (no result transfer); seconds + metrics."""
    epoch_start = time.time()
    with job_group(spark, label):
        _, seconds = timed(lambda: df.write.format("noop").mode("overwrite").save())
    metrics = stage_metrics(spark, label, epoch_start, time.time())
    metrics.pop("stages", None)
    return seconds, metrics


def machine_info(spark: SparkSession) -> dict[str, Any]:
    """Where the numbers come from."""
    sc = spark.sparkContext
    jvm = sc._jvm
    mem_bytes = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return host() | {
        "memory_gb": round(mem_bytes / 1024**3, 1),
        "pyspark": pyspark.__version__,
        "java": str(jvm.System.getProperty("java.version")) if jvm is not None else None,
        "duckdb": duckdb.__version__,
        "pyarrow": pa.__version__,
        "pandas": pd.__version__,
    }


def spark_conf(spark: SparkSession) -> dict[str, Any]:
    """The Spark settings that matter for this benchmark."""
    conf = spark.sparkContext.getConf()
    jvm = spark.sparkContext._jvm
    keys = (
        "spark.master",
        "spark.driver.memory",
        "spark.sql.shuffle.partitions",
        "spark.sql.adaptive.enabled",
        "spark.sql.execution.arrow.pyspark.enabled",
    )
    info: dict[str, Any] = {
        k: spark.conf.get(k) if k.startswith("spark.sql") else conf.get(k) for k in keys
    }
    info["default_parallelism"] = spark.sparkContext.defaultParallelism
    if jvm is not None:
        info["jvm_max_heap_mb"] = round(jvm.java.lang.Runtime.getRuntime().maxMemory() / MB)
    return info


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def _r(value: float) -> float:
    return round(value, 3)


def print_table(result: dict[str, Any]) -> None:
    """A short human-readable summary of ``result``."""
    t = result["timings_s"]
    r = result["rows_per_s"]
    ref = t["reference_warm"]
    rows = result["rows"]
    lines = [
        f"driftline feature job, {rows:,} rows, {result['machine']['cpu_count']} cores "
        f"(Spark {result['machine']['pyspark']}, DuckDB {result['machine']['duckdb']})",
        f"{'phase':<46}{'seconds':>10}{'rows/s':>14}",
        f"{'spark session start':<46}{t['spark_session_start']:>10.2f}{'':>14}",
        f"{'spark run 1 (cold)':<46}{t['spark_cold']['total_s']:>10.2f}{r['spark_cold']:>14,.0f}",
        f"{'spark run 2 (warm)':<46}{t['spark_warm']['total_s']:>10.2f}{r['spark_warm']:>14,.0f}",
        f"{'spark session start + run 1':<46}{t['spark_one_shot_s']:>10.2f}"
        f"{r['spark_one_shot_with_session_start']:>14,.0f}",
        f"{'  warm: build DataFrame (reads footers)':<46}"
        f"{t['spark_warm']['build_dataframe_s']:>10.2f}",
        f"{'  warm: execute + toArrow()':<46}{t['spark_warm']['execute_to_arrow_s']:>10.2f}",
        f"{'  warm: to_canonical (pyarrow)':<46}{t['spark_warm']['to_canonical_s']:>10.2f}",
        f"{'  Parquet scan only (noop sink)':<46}{t['spark_scan_noop']:>10.2f}",
        f"{'  compute, no result transfer (noop sink)':<46}{t['spark_compute_noop']:>10.2f}",
        f"{'duckdb run 1':<46}{t['reference_cold']['total_s']:>10.2f}{r['reference_cold']:>14,.0f}",
        f"{'duckdb run 2 (warm)':<46}{ref['total_s']:>10.2f}{r['reference_warm']:>14,.0f}",
        f"{'  warm: pyarrow read_table':<46}{ref['read_s']:>10.2f}",
        f"{'  warm: DuckDB compute + to_canonical':<46}{ref['compute_s']:>10.2f}",
    ]
    for n, sweep in result.get("shuffle_partition_sweep", {}).items():
        lines.append(
            f"{f'spark warm, shuffle partitions = {n}':<46}{sweep['total_s']:>10.2f}"
            f"{sweep['rows_per_s']:>14,.0f}"
        )
    m = result["spark_warm_metrics_summary"]
    if "error" not in m:
        lines.append(
            f"spark warm run: {m['jobs']} jobs, {m['stages_completed']} stages, "
            f"{m['tasks']} tasks, "
            f"executor run {m['executor_run_s']:.1f}s (cpu {m['executor_cpu_s']:.1f}s, "
            f"gc {m['jvm_gc_s']:.1f}s), shuffle write {m['shuffle_write_mb']:.0f} MiB, "
            f"no stage running {m['no_stage_running_wall_s']:.1f}s"
        )
    lines.append(f"plan nodes: {result['spark_plan_nodes']}")
    lines.append(
        f"ratio_spark_over_reference (warm; reference rows/s / spark rows/s): "
        f"{result['ratio_spark_over_reference']:.2f}x; one-shot incl. session start: "
        f"{result['ratio_spark_one_shot_over_reference_one_shot']:.2f}x; "
        f"outputs identical: {result['outputs_identical']}"
    )
    print("\n".join(lines))


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, write the JSON result and print a summary."""
    args = parse_args(argv)
    # Only cosmetic: keep Spark's console progress bar out of the printed table.
    os.environ.setdefault(
        "PYSPARK_SUBMIT_ARGS", "--conf spark.ui.showConsoleProgress=false pyspark-shell"
    )
    interval = Interval.for_day(ANCHOR)
    with tempfile.TemporaryDirectory(prefix="driftline-bench-") as tmp:
        folder = Path(tmp)
        print(f"simulating {args.rows:,} rows for {ANCHOR} ...", flush=True)
        tx_path, labels_path, data = write_inputs(folder, args.rows, args.seed)

        print("duckdb reference (2 runs) ...", flush=True)
        _, ref_cold = run_reference(tx_path, labels_path, interval)
        reference, ref_warm = run_reference(tx_path, labels_path, interval)
        expected = reference.to_pandas()
        rows = reference.num_rows
        if rows != data["transactions"]:
            raise AssertionError(f"reference has {rows} rows for {data['transactions']} inputs")

        overrides = (
            {"spark_shuffle_partitions": args.shuffle_partitions}
            if args.shuffle_partitions is not None
            else {}
        )
        settings = Settings(home=folder / "home", **overrides)
        print("spark session start ...", flush=True)
        spark, session_s = timed(lambda: get_spark(settings))
        try:
            print("spark (2 runs + 2 noop-sink runs) ...", flush=True)
            cold_table, cold = run_spark(spark, tx_path, labels_path, interval, "spark_cold")
            assert_identical(expected, cold_table, "spark cold run")
            del cold_table
            warm_table, warm = run_spark(spark, tx_path, labels_path, interval, "spark_warm")
            assert_identical(expected, warm_table, "spark warm run")
            del warm_table
            scan_s, scan_metrics = noop_seconds(
                spark, spark.read.parquet(tx_path), "spark_scan_noop"
            )
            compute_s, compute_metrics = noop_seconds(
                spark,
                spark_features(spark, tx_path, labels_path, interval),
                "spark_compute_noop",
            )
            sweep: dict[str, dict[str, float]] = {}
            configured = spark.conf.get("spark.sql.shuffle.partitions")
            for n in args.sweep_shuffle_partitions:
                print(f"spark warm run, shuffle partitions = {n} ...", flush=True)
                spark.conf.set("spark.sql.shuffle.partitions", str(n))
                table, run = run_spark(spark, tx_path, labels_path, interval, f"sweep_{n}")
                assert_identical(expected, table, f"spark run with {n} shuffle partitions")
                sweep[str(n)] = {
                    "total_s": _r(run["total_s"]),
                    "rows_per_s": round(rate(rows, run["total_s"])),
                    "tasks": run["spark_metrics"].get("tasks", -1),
                }
            spark.conf.set("spark.sql.shuffle.partitions", str(configured))
            machine = machine_info(spark)
            conf = spark_conf(spark)
            jvm = spark.sparkContext._jvm
            jvm_pid = int(jvm.ProcessHandle.current().pid()) if jvm is not None else None
            memory = {
                "python_peak_rss_mb": round(peak_rss_mb() or 0.0),
                "jvm_peak_rss_mb": round(peak_rss_mb(jvm_pid) or 0.0) if jvm_pid else None,
            }
        finally:
            spark.stop()

    one_shot_s = session_s + cold["total_s"]
    warm_metrics = warm.pop("spark_metrics")
    cold_metrics = cold.pop("spark_metrics")
    plan = warm.pop("plan_nodes")
    cold.pop("plan_nodes")
    result: dict[str, Any] = {
        "benchmark": "feature_job_throughput",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "baseline": BASELINE,
        "machine": machine,
        "spark_conf": conf,
        "data": {"day": ANCHOR.isoformat(), "seed": args.seed, "rows_per_day": args.rows, **data},
        "rows": rows,
        "timings_s": {
            "spark_session_start": _r(session_s),
            "spark_cold": {k: _r(v) for k, v in cold.items()},
            "spark_warm": {k: _r(v) for k, v in warm.items()},
            "spark_one_shot_s": _r(one_shot_s),
            "spark_scan_noop": _r(scan_s),
            "spark_compute_noop": _r(compute_s),
            "reference_cold": {k: _r(v) for k, v in ref_cold.items()},
            "reference_warm": {k: _r(v) for k, v in ref_warm.items()},
        },
        "rows_per_s": {
            "spark_warm": round(rate(rows, warm["total_s"])),
            "spark_cold": round(rate(rows, cold["total_s"])),
            "spark_one_shot_with_session_start": round(rate(rows, one_shot_s)),
            "reference_warm": round(rate(rows, ref_warm["total_s"])),
            "reference_cold": round(rate(rows, ref_cold["total_s"])),
        },
        "ratio_spark_over_reference": _r(warm["total_s"] / ref_warm["total_s"]),
        "ratio_spark_one_shot_over_reference_one_shot": _r(one_shot_s / ref_cold["total_s"]),
        "ratio_definition": (
            "reference rows/s divided by spark rows/s (= spark seconds / reference seconds); "
            "above 1 means Spark is slower. The main ratio compares warm runs; the one-shot "
            "ratio compares Spark session start + first run with the reference's first run."
        ),
        "spark_plan_nodes": plan,
        "spark_warm_metrics_summary": {k: v for k, v in warm_metrics.items() if k != "stages"},
        "spark_warm_stages": warm_metrics.get("stages", []),
        "spark_cold_metrics_summary": {k: v for k, v in cold_metrics.items() if k != "stages"},
        "spark_scan_noop_metrics": scan_metrics,
        "spark_compute_noop_metrics": compute_metrics,
        "shuffle_partition_sweep": sweep,
        "memory": memory,
        "outputs_identical": True,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
