"""A single-process reference of the feature job, in DuckDB SQL.

It computes the same rows as :func:`driftline.data.features.compute_features`, written
independently, so tests and the benchmark can check the Spark job's output
against it, and the benchmark can measure what Spark's distribution costs on one
machine.
"""

from __future__ import annotations

import pyarrow as pa

from driftline.core.interval import Interval
from driftline.data.features import LOOKBACK, PREV_TXN_CAP_SECONDS, US_PER_SECOND, to_canonical

_SQL = """
WITH tx AS (
    SELECT *, epoch_us(ts) AS ts_us FROM transactions
    WHERE epoch_us(ts) >= {lookback_us} AND epoch_us(ts) < {end_us}
),
users AS (
    SELECT
        transaction_id, user_id, merchant_id, ts, amount, ts_us,
        count(*) OVER u1h AS user_txn_count_1h,
        count(*) OVER u24h AS user_txn_count_24h,
        count(*) OVER u7d AS user_txn_count_7d,
        sum(amount) OVER u24h AS user_amount_sum_24h,
        max(amount) OVER u24h AS user_amount_max_24h,
        avg(amount) OVER u7d AS user_amount_mean_7d,
        coalesce(stddev_samp(amount) OVER u7d, 0.0) AS user_amount_std_7d,
        count(DISTINCT merchant_id) OVER u24h AS user_distinct_merchants_24h,
        count(DISTINCT merchant_country) OVER u24h AS user_distinct_countries_24h,
        CASE WHEN device_id IS NULL THEN 0
             WHEN count(*) OVER dev7d = 0 THEN 1 ELSE 0 END AS user_new_device,
        least(coalesce((ts_us - lag(ts_us) OVER u) / {us}, {cap}), {cap})
            AS user_seconds_since_prev_txn,
        amount / avg(amount) OVER u7d AS user_amount_to_mean_7d
    FROM tx
    WINDOW
        u AS (PARTITION BY user_id ORDER BY ts_us),
        u1h AS (PARTITION BY user_id ORDER BY ts_us
                RANGE BETWEEN {h1} PRECEDING AND CURRENT ROW),
        u24h AS (PARTITION BY user_id ORDER BY ts_us
                 RANGE BETWEEN {d1} PRECEDING AND CURRENT ROW),
        u7d AS (PARTITION BY user_id ORDER BY ts_us
                RANGE BETWEEN {d7} PRECEDING AND CURRENT ROW),
        dev7d AS (PARTITION BY user_id, device_id ORDER BY ts_us
                  RANGE BETWEEN {d7} PRECEDING AND 1 PRECEDING)
),
events AS (
    SELECT transaction_id, merchant_id, ts_us, 0 AS is_report FROM tx
    UNION ALL
    SELECT NULL, merchant_id, epoch_us(label_ts), 1 FROM labels
    WHERE is_fraud = 1 AND label_ts < TIMESTAMPTZ '{end}'
),
merchants AS (
    SELECT
        transaction_id, is_report,
        sum(1 - is_report) OVER m24h AS merchant_txn_count_24h,
        sum(1 - is_report) OVER m14d AS merchant_txn_count_14d,
        sum(is_report) OVER m14d AS merchant_fraud_reports_14d
    FROM events
    WINDOW
        m24h AS (PARTITION BY merchant_id ORDER BY ts_us
                 RANGE BETWEEN {d1} PRECEDING AND CURRENT ROW),
        m14d AS (PARTITION BY merchant_id ORDER BY ts_us
                 RANGE BETWEEN {d14} PRECEDING AND CURRENT ROW)
)
SELECT
    u.transaction_id, u.user_id, u.merchant_id, u.ts AS event_timestamp, u.amount,
    u.* EXCLUDE (transaction_id, user_id, merchant_id, ts, amount, ts_us),
    m.merchant_txn_count_24h, m.merchant_txn_count_14d, m.merchant_fraud_reports_14d,
    least(m.merchant_fraud_reports_14d / m.merchant_txn_count_14d, 1.0)
        AS merchant_fraud_rate_14d
FROM users u JOIN merchants m USING (transaction_id)
WHERE m.is_report = 0 AND u.ts_us >= {start_us}
"""


def compute_features_reference(
    transactions: pa.Table, labels: pa.Table, interval: Interval, threads: int | None = None
) -> pa.Table:
    """Compute the feature table of ``interval`` with DuckDB (single process).

    Args:
        transactions: Raw transactions covering the interval and its look-back.
        labels: Raw chargebacks covering the same span.
        interval: Transactions in ``[start, end)`` get a row.
        threads: DuckDB worker threads (``None``: DuckDB's default).

    Returns:
        The canonical feature table (same schema and order as the Spark job's).
    """
    import duckdb

    start_us = int(interval.start.timestamp()) * US_PER_SECOND
    end_us = int(interval.end.timestamp()) * US_PER_SECOND
    sql = _SQL.format(
        lookback_us=start_us - int(LOOKBACK.total_seconds()) * US_PER_SECOND,
        start_us=start_us,
        end_us=end_us,
        end=interval.end.isoformat(),
        us=US_PER_SECOND,
        cap=float(PREV_TXN_CAP_SECONDS),
        h1=3600 * US_PER_SECOND - 1,
        d1=86400 * US_PER_SECOND - 1,
        d7=7 * 86400 * US_PER_SECOND - 1,
        d14=14 * 86400 * US_PER_SECOND - 1,
    )
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        if threads:
            con.execute(f"SET threads = {int(threads)}")
        con.register("transactions", transactions)
        con.register("labels", labels)
        return to_canonical(con.sql(sql).to_arrow_table())
    finally:
        con.close()
