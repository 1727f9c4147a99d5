"""Windowed fraud features computed with PySpark, for exactly one data interval.

Every feature row describes one transaction and the state of its user and merchant
*right after* it, over half-open look-back windows ``(t - w, t]``:

* user: transaction counts over 1h/24h/7d, amount sum/max over 24h, mean/std over
  7d, distinct merchants and countries over 24h, whether the device is new for the
  user over 7d, seconds since the previous transaction (capped at 7d), and the
  amount relative to the user's 7-day mean;
* merchant: transaction counts over 24h/14d, chargebacks *reported* in
  ``(t - 14d, t]`` and the fraud rate they imply (capped at 1).

No leakage: a row at time ``t`` only uses transactions up to ``t`` and labels whose
``label_ts`` is at most ``t`` (when the chargeback was known, not when the fraud
happened). Training joins labels to these rows point-in-time through Feast;
serving reads the latest row per entity from the online store.

:func:`compute_features` is pure (DataFrames in, DataFrame out). :func:`build_features`
is the stage: check the history, read the look-back partitions, compute, validate,
publish.

Missing history is an error, not a smaller answer. A run needs the validated raw
transactions *and* labels of every day of the interval and of the :data:`LOOKBACK`
days before it; a window computed over fewer days would be silently wrong (a 7-day
count over 2 days). A raw partition is only ever written by the validation gate
(:func:`driftline.data.ingest.publish_validated` publishes a batch after its suite
passed), so its existence is the mark that the day was validated. Days before
:attr:`~driftline.core.settings.Settings.data_start` (the declared first day of data)
are legitimately absent and are never read, even where a partition exists, so the
result depends only on the declared inputs. Anything else missing raises
:class:`MissingHistoryError` before Spark reads a file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from driftline.core import lake
from driftline.core.feature_spec import (
    FEATURE_SPEC,
    FRESH_RETENTION,
    MERCHANT_FEATURES,
    USER_FEATURES,
)
from driftline.core.interval import Interval
from driftline.core.schemas import LABELS, TIMESTAMP, TRANSACTIONS
from driftline.core.settings import Settings, get_settings
from driftline.data.errors import DataError

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession
    from pyspark.sql.window import WindowSpec

log = logging.getLogger(__name__)

DATASET = "transaction_features"
US_PER_SECOND = 1_000_000
HOUR, DAY = 3600, 86400
#: How far back the windows look; the job reads this many days before the interval.
LOOKBACK = timedelta(days=14)
PREV_TXN_CAP_SECONDS = 7 * DAY

_ARROW = {"int64": pa.int64(), "float64": pa.float64()}
#: Canonical schema of a feature partition (the Feast offline source): keys, the
#: amount, then every feature of the spec in declaration order.
FEATURES = pa.schema(
    [
        pa.field("transaction_id", pa.string(), nullable=False),
        pa.field("user_id", pa.int64(), nullable=False),
        pa.field("merchant_id", pa.int64(), nullable=False),
        pa.field("event_timestamp", TIMESTAMP, nullable=False),
        pa.field("amount", pa.float64()),
        *(pa.field(f.name, _ARROW[f.dtype]) for f in FEATURE_SPEC),
    ]
)


def _micros(seconds: int) -> int:
    return seconds * US_PER_SECOND


def _user_features(tx: DataFrame) -> DataFrame:
    """Add the per-user window features to ``tx`` (which carries ``ts_us``)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812

    by_user = Window.partitionBy("user_id").orderBy("ts_us")

    def last(seconds: int) -> WindowSpec:
        return by_user.rangeBetween(-(_micros(seconds) - 1), 0)

    by_device = (
        Window.partitionBy("user_id", "device_id")
        .orderBy("ts_us")
        .rangeBetween(-(_micros(7 * DAY) - 1), -1)
    )
    previous_gap = (F.col("ts_us") - F.lag("ts_us").over(by_user)) / US_PER_SECOND
    mean_7d = F.avg("amount").over(last(7 * DAY))
    seen_device = F.count(F.lit(1)).over(by_device)
    return tx.select(
        "*",
        F.count(F.lit(1)).over(last(HOUR)).alias("user_txn_count_1h"),
        F.count(F.lit(1)).over(last(DAY)).alias("user_txn_count_24h"),
        F.count(F.lit(1)).over(last(7 * DAY)).alias("user_txn_count_7d"),
        F.sum("amount").over(last(DAY)).alias("user_amount_sum_24h"),
        F.max("amount").over(last(DAY)).alias("user_amount_max_24h"),
        mean_7d.alias("user_amount_mean_7d"),
        F.coalesce(F.stddev_samp("amount").over(last(7 * DAY)), F.lit(0.0)).alias(
            "user_amount_std_7d"
        ),
        F.size(F.collect_set("merchant_id").over(last(DAY))).alias("user_distinct_merchants_24h"),
        F.size(F.collect_set("merchant_country").over(last(DAY))).alias(
            "user_distinct_countries_24h"
        ),
        F.when(F.col("device_id").isNull(), F.lit(0))
        .when(seen_device == 0, F.lit(1))
        .otherwise(F.lit(0))
        .alias("user_new_device"),
        F.least(
            F.coalesce(previous_gap, F.lit(float(PREV_TXN_CAP_SECONDS))),
            F.lit(float(PREV_TXN_CAP_SECONDS)),
        ).alias("user_seconds_since_prev_txn"),
        (F.col("amount") / mean_7d).alias("user_amount_to_mean_7d"),
    )


def _merchant_features(rows: DataFrame, labels: DataFrame) -> DataFrame:
    """Add merchant counts and chargebacks known at transaction time to ``rows``.

    Chargebacks join the transactions as events in one per-merchant timeline (no
    join back on ``transaction_id``, no second scan of the transactions).
    """
    from pyspark.sql import Window
    from pyspark.sql import functions as F  # noqa: N812

    report_events = labels.where(F.col("is_fraud") == 1).select(
        "merchant_id",
        F.unix_micros("label_ts").alias("ts_us"),
        F.lit(1).alias("is_report"),
    )
    events = rows.withColumn("is_report", F.lit(0)).unionByName(
        report_events, allowMissingColumns=True
    )
    by_merchant = Window.partitionBy("merchant_id").orderBy("ts_us")

    def last(seconds: int) -> WindowSpec:
        return by_merchant.rangeBetween(-(_micros(seconds) - 1), 0)

    txn_flag = 1 - F.col("is_report")
    count_14d = F.sum(txn_flag).over(last(14 * DAY))
    reports_14d = F.sum("is_report").over(last(14 * DAY))
    with_counts = events.select(
        "*",
        F.sum(txn_flag).over(last(DAY)).cast("long").alias("merchant_txn_count_24h"),
        count_14d.cast("long").alias("merchant_txn_count_14d"),
        reports_14d.cast("long").alias("merchant_fraud_reports_14d"),
        F.least(reports_14d / count_14d, F.lit(1.0)).alias("merchant_fraud_rate_14d"),
    )
    return with_counts.where(F.col("is_report") == 0).drop("is_report")


def compute_features(tx: DataFrame, labels: DataFrame, interval: Interval) -> DataFrame:
    """Compute the feature rows of the transactions inside ``interval``.

    Args:
        tx: Transactions (canonical schema) covering ``interval`` and its look-back.
        labels: Chargebacks (canonical schema) covering the same span, by ``label_ts``.
        interval: Only transactions with ``ts`` in ``[start, end)`` get a row.

    Returns:
        One row per transaction in the interval, with the columns of :data:`FEATURES`.
    """
    from pyspark.sql import functions as F  # noqa: N812

    start_us = int(interval.start.timestamp()) * US_PER_SECOND
    end_us = int(interval.end.timestamp()) * US_PER_SECOND
    lookback_us = start_us - _micros(int(LOOKBACK.total_seconds()))
    timed = tx.withColumn("ts_us", F.unix_micros("ts")).where(
        (F.col("ts_us") >= lookback_us) & (F.col("ts_us") < end_us)
    )
    users = _user_features(timed)
    both = _merchant_features(users, labels.where(F.col("label_ts") < interval.end))
    return both.where(F.col("ts_us") >= start_us).select(
        *[F.col(c) for c in ("transaction_id", "user_id", "merchant_id")],
        F.col("ts").alias("event_timestamp"),
        F.col("amount"),
        *[F.col(c) for c in USER_FEATURES + MERCHANT_FEATURES],
    )


def to_canonical(table: pa.Table) -> pa.Table:
    """Cast a feature table to :data:`FEATURES`, sorted by time then transaction id."""
    typed = table.select(FEATURES.names).cast(FEATURES)
    order = [("event_timestamp", "ascending"), ("transaction_id", "ascending")]
    return typed.take(pc.sort_indices(typed, sort_keys=order))


#: Hadoop's S3 filesystem (the ``hadoop-aws`` jar); Spark reads ``s3a://`` only with it.
S3A_CLASS = "org.apache.hadoop.fs.s3a.S3AFileSystem"


def _spark_frame(spark: SparkSession, files: list[str], schema: pa.Schema) -> DataFrame:
    """Read partition files with Spark (or an empty frame of ``schema``).

    Local files, and S3 objects where Spark has ``s3a``, are read by Spark itself. Other
    object-store files are read on the driver with pyarrow through fsspec (the lake's own
    filesystem) and handed to Spark as one Arrow table: pyspark ships no ``hadoop-aws``
    jars and this machine cannot fetch them from Maven, so without them Spark cannot open
    ``s3a://``. That is a driver-side read of the job's raw days, fine at the demo's
    scale (days of thousands of rows); a cluster with ``hadoop-aws`` reads in parallel.
    """
    if not files:
        return spark.createDataFrame(schema.empty_table())
    if all(_spark_reads(spark, uri) for uri in files):
        return spark.read.parquet(*[_spark_path(f) for f in files])
    table = pa.concat_tables(lake.read_file(uri).select(schema.names).cast(schema) for uri in files)
    return spark.createDataFrame(table)


def _spark_reads(spark: SparkSession, uri: str) -> bool:
    """Whether Spark can open ``uri`` itself: a local path, or S3 with ``s3a`` there."""
    if "://" not in uri or uri.startswith("file://"):
        return True
    return uri.startswith("s3://") and _has_s3a(spark)


def _has_s3a(spark: SparkSession) -> bool:
    """Whether Hadoop's :data:`S3A_CLASS` is on the Spark driver's classpath."""
    try:
        # A classic session's JVM (a Spark Connect session has none on this side).
        jvm = spark.sparkContext._jvm
        return bool(jvm.org.apache.spark.util.Utils.classIsLoadable(S3A_CLASS))  # type: ignore[union-attr]
    except Exception:  # no JVM gateway here, or the class cannot be resolved
        return False


def _spark_path(uri: str) -> str:
    """Spark's Hadoop filesystems name S3 ``s3a://``; local paths stay as they are."""
    return "s3a://" + uri.removeprefix("s3://") if uri.startswith("s3://") else uri


#: Raw datasets every feature run reads (transactions, and labels for chargebacks).
RAW_DATASETS = ("transactions", "labels")


class MissingHistoryError(DataError):
    """Raw partitions a feature run needs are missing (or were never validated).

    Attributes:
        interval: The interval whose features were requested.
        missing: Missing days per raw dataset, oldest first.
        lookback: How far before the interval the run reads.
    """

    def __init__(
        self,
        interval: Interval,
        missing: dict[str, list[date]],
        lookback: timedelta = LOOKBACK,
    ) -> None:
        self.interval = interval
        self.missing = missing
        self.lookback = lookback
        super().__init__(_missing_message(interval, missing, lookback))


def _day_ranges(days: list[date]) -> str:
    """``2026-01-03..2026-01-05, 2026-01-08``: consecutive days joined into ranges."""
    runs: list[list[date]] = []
    for day in sorted(days):
        if runs and day - runs[-1][-1] == timedelta(days=1):
            runs[-1].append(day)
        else:
            runs.append([day])
    return ", ".join(
        run[0].isoformat() if len(run) == 1 else f"{run[0].isoformat()}..{run[-1].isoformat()}"
        for run in runs
    )


def _missing_message(
    interval: Interval, missing: dict[str, list[date]], lookback: timedelta = LOOKBACK
) -> str:
    listed = "; ".join(
        f"raw {dataset}: {_day_ranges(days)} ({len(days)} day{'s' * (len(days) != 1)})"
        for dataset, days in missing.items()
    )
    return (
        f"features for {interval} need the validated raw partitions of the interval and "
        f"the {lookback.days} days before it; missing {listed}. Ingest and validate those "
        "days first (the ingest_validate_materialize DAG for each day, or `driftline ingest` "
        "and `driftline validate`), or, if the data really begins later, declare its first "
        "day with DRIFTLINE_DATA_START."
    )


def lookback_days(
    interval: Interval, data_start: date | None = None, lookback: timedelta = LOOKBACK
) -> list[date]:
    """Days whose raw partitions the job reads for ``interval``, oldest first.

    The interval's own days and the ``lookback`` days before it (by default
    :data:`LOOKBACK`), less the look-back days before ``data_start`` (the declared first
    day of data; ``None``: none).
    """
    first = interval.start.date()
    return [
        day
        for day in interval.widen(lookback).days()
        if data_start is None or day >= first or day >= data_start
    ]


def missing_history(
    interval: Interval,
    settings: Settings | None = None,
    lookback: timedelta = LOOKBACK,
    datasets: tuple[str, ...] = RAW_DATASETS,
) -> dict[str, list[date]]:
    """Days of :func:`lookback_days` without a validated raw partition, per raw dataset."""
    cfg = settings or get_settings()
    days = lookback_days(interval, cfg.data_start, lookback)
    missing = {
        dataset: [
            day
            for day in days
            if not lake.exists(lake.partition_file(cfg.lake_uri, "raw", dataset, day))
        ]
        for dataset in datasets
    }
    return {dataset: days for dataset, days in missing.items() if days}


def require_history(
    interval: Interval,
    settings: Settings | None = None,
    lookback: timedelta = LOOKBACK,
    datasets: tuple[str, ...] = RAW_DATASETS,
) -> list[date]:
    """The days to read for ``interval``, after checking that each one is there.

    Args:
        interval: The interval to compute.
        settings: Settings (``data_start``, the lake); default :func:`get_settings`.
        lookback: How far before the interval the run reads (default :data:`LOOKBACK`).
        datasets: The raw datasets the run reads (default :data:`RAW_DATASETS`).

    Raises:
        MissingHistoryError: A needed raw partition does not exist.
    """
    cfg = settings or get_settings()
    missing = missing_history(interval, cfg, lookback, datasets)
    if missing:
        raise MissingHistoryError(interval, missing, lookback)
    return lookback_days(interval, cfg.data_start, lookback)


def first_complete_day(settings: Settings) -> date | None:
    """First day whose look-back features are complete, or None without ``data_start``.

    Before ``data_start`` + the longest look-back (:data:`LOOKBACK` of the store
    features, ``FRESH_RETENTION`` of the fresh ones) the windows reach before the first
    day of data, so the features are smaller than they will ever be again (a merchant's
    14-day count grows for two weeks). No model trains on such days: training sets
    refuse them and retrain windows start no earlier.
    """
    if settings.data_start is None:
        return None
    return settings.data_start + max(LOOKBACK, FRESH_RETENTION)


@dataclass(frozen=True)
class FeatureResult:
    """Outcome of the feature stage for one interval.

    Attributes:
        interval: The interval computed.
        rows: Store-feature rows published per day (ISO date -> count).
        partitions: URIs of the store-feature partitions written.
        fresh_rows: Fresh-feature rows published per day (:mod:`driftline.data.fresh`).
    """

    interval: str
    rows: dict[str, int]
    partitions: tuple[str, ...]
    fresh_rows: dict[str, int] = field(default_factory=dict)


def compute_interval(interval: Interval, settings: Settings | None = None) -> pa.Table:
    """Compute (but do not publish) the feature table of ``interval`` from raw partitions.

    Raises:
        MissingHistoryError: A raw partition of the interval or its look-back is
            missing (see the module docstring).
    """
    from driftline.data.spark import get_spark

    cfg = settings or get_settings()
    days = require_history(interval, cfg)
    spark = get_spark(cfg)

    def files(dataset: str) -> list[str]:
        return [lake.partition_file(cfg.lake_uri, "raw", dataset, day) for day in days]

    tx = _spark_frame(spark, files("transactions"), TRANSACTIONS)
    labels = _spark_frame(spark, files("labels"), LABELS)
    return to_canonical(compute_features(tx, labels, interval).toArrow())


def _day_slice(table: pa.Table, day: date) -> pa.Table:
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    column = table["event_timestamp"]
    mask = pc.and_(
        pc.greater_equal(column, pa.scalar(start, TIMESTAMP)),
        pc.less(column, pa.scalar(start + timedelta(days=1), TIMESTAMP)),
    )
    return table.filter(mask)


def build_features(interval: Interval, settings: Settings | None = None) -> FeatureResult:
    """The feature stage: compute, validate (GX ``features`` suite) and publish per day.

    Every day of both feature sets is validated before anything is published: the
    store features (GX ``features``), then the fresh features of the interval's
    transactions (:func:`driftline.data.fresh.validated_fresh`, GX ``fresh_features``).
    A failure in either leaves every existing partition of both as it was. Every entry
    point of this stage (the ingest DAG, the CLI, the DVC stage) builds both.

    Raises:
        MissingHistoryError: Raw history the interval needs is missing; nothing is
            computed or published.
        driftline.data.ingest.BatchQuarantined: The features failed validation.
    """
    from driftline.data.fresh import validated_fresh, write_fresh
    from driftline.data.ingest import BatchQuarantined, quarantine
    from driftline.data.validate import describe_failures, validate_frame

    cfg = settings or get_settings()
    table = compute_interval(interval, cfg)
    slices = {day: _day_slice(table, day) for day in interval.days()}
    for day, part in slices.items():
        outcome = validate_frame(part.to_pandas(), "features", Interval.for_day(day), cfg)
        if not outcome.success:
            reason = describe_failures(outcome)
            sink = pa.BufferOutputStream()
            pq.write_table(part, sink)
            where = quarantine(
                cfg.lake_uri, DATASET, day, reason, sink.getvalue().to_pybytes(), outcome.result
            )
            raise BatchQuarantined(f"features for {day} failed validation: {reason}", where)
    fresh_tables, events = validated_fresh(interval, cfg)
    partitions = tuple(
        lake.replace_partition(cfg.lake_uri, "features", DATASET, day, part)
        for day, part in slices.items()
    )
    fresh = write_fresh(interval, fresh_tables, events, cfg)
    return FeatureResult(
        str(interval),
        {d.isoformat(): p.num_rows for d, p in slices.items()},
        partitions,
        fresh.rows,
    )
