"""What was served and what is known about it since: prediction-log days and chargebacks.

Drift monitoring and canary analysis both read the prediction log
(:mod:`driftline.data.predictions`) by transaction day and label the served rows with
the chargebacks that have been *reported* by a given day (the lake's raw ``labels``
partitions are per report day). A served transaction without a reported chargeback
counts as legitimate, exactly as a training set labels its rows.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

import pandas as pd
import pyarrow.compute as pc

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.schemas import LABELS
from driftline.core.settings import Settings
from driftline.data import predictions
from driftline.data.predictions import read_predictions


def logged_days(settings: Settings, *, since: date | None = None) -> list[date]:
    """Transaction days that have prediction-log rows, oldest first (from ``since``)."""
    return predictions.logged_days(settings, since=since)


def read_served(settings: Settings, days: Iterable[date]) -> pd.DataFrame:
    """The prediction-log rows of ``days`` in one frame (empty without columns if none)."""
    frames = [frame for day in days if len(frame := read_predictions(settings, day))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def reported_frauds(settings: Settings, first_day: date, known_by: date) -> set[str]:
    """Transaction ids with a chargeback reported on ``[first_day, known_by]``.

    Chargebacks of transactions on or after ``first_day`` can only be reported from
    ``first_day`` on, so this is every label known by the end of ``known_by`` for them.
    """
    if known_by < first_day:
        return set()
    report_days = Interval.parse(first_day, known_by + timedelta(days=1)).days()
    table = lake.read_partitions(settings.lake_uri, "raw", "labels", report_days, LABELS)
    frauds = table.filter(pc.equal(table["is_fraud"], 1))
    return set(frauds["transaction_id"].to_pylist())


def frauds_known_within(
    settings: Settings, first_day: date, last_day: date, within_days: int
) -> set[str]:
    """Transaction ids on ``[first_day, last_day]`` whose chargeback was reported at most
    ``within_days`` days after the transaction's day (report day - transaction day).

    This is a label maturity that is the same for every transaction, whatever its day,
    so two sets of days labelled this way (the served days a monitor judges and the
    reference days it compares them with) are labelled alike.
    """
    if last_day < first_day:
        return set()
    report_days = Interval.parse(first_day, last_day + timedelta(days=within_days + 1)).days()
    table = lake.read_partitions(settings.lake_uri, "raw", "labels", report_days, LABELS)
    frauds = table.filter(pc.equal(table["is_fraud"], 1)).to_pandas()
    if frauds.empty:
        return set()
    tx_day = pd.to_datetime(frauds["transaction_ts"], utc=True).dt.normalize()
    report_day = pd.to_datetime(frauds["label_ts"], utc=True).dt.normalize()
    first = pd.Timestamp(first_day, tz="UTC")
    last = pd.Timestamp(last_day, tz="UTC")
    kept = (tx_day >= first) & (tx_day <= last) & ((report_day - tx_day).dt.days <= within_days)
    return set(frauds.loc[kept, "transaction_id"].astype(str))
