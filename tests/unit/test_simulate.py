"""Tests of the transaction simulator (tiny populations, fast)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from driftline.core import schemas
from driftline.core.interval import Interval
from driftline.simulator import (
    DAY_US,
    BadBatch,
    DriftScenario,
    SimulatorConfig,
    landing_path,
    simulate_labels,
    simulate_transactions,
    truth_path,
    write_landing,
)
from driftline.simulator.days import _unique_per_user, day_rows
from driftline.simulator.labels import _chargebacks
from driftline.simulator.patterns import _compromised_merchants
from driftline.simulator.population import _population, population_of

ANCHOR = date(2026, 1, 1)
CONFIG = SimulatorConfig(seed=11, rows_per_day=2000, anchor=ANCHOR, fraud_rate=0.02)


@pytest.fixture(autouse=True)
def _fresh_caches() -> Iterator[None]:
    """Each test regenerates from scratch, so caching cannot mask nondeterminism."""
    _clear()
    yield
    _clear()


def _clear() -> None:
    day_rows.cache_clear()
    _chargebacks.cache_clear()
    _population.cache_clear()


def _days(first: date, n: int) -> list[date]:
    return [first + timedelta(days=i) for i in range(n)]


def _frame(config: SimulatorConfig, days: list[date]) -> pd.DataFrame:
    """Transactions of ``days`` joined with their ground truth."""
    frames = []
    for day in days:
        tx, truth = simulate_transactions(config, day)
        assert tx.column("transaction_id").equals(truth.column("transaction_id"))
        frame = tx.to_pandas()
        frame["is_fraud"] = truth.column("is_fraud").to_numpy()
        frame["fraud_type"] = truth.column("fraud_type").to_pylist()
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def _utc(day: date) -> pd.Timestamp:
    return pd.Timestamp(datetime(day.year, day.month, day.day, tzinfo=UTC))


# ------------------------------------------------------------------ schema & determinism


def test_tables_match_canonical_schemas() -> None:
    tx, truth = simulate_transactions(CONFIG, date(2026, 1, 12))
    labels = simulate_labels(CONFIG, date(2026, 1, 12))
    assert tx.schema.equals(schemas.TRANSACTIONS)
    assert labels.schema.equals(schemas.LABELS)
    assert truth.schema.names == ["transaction_id", "is_fraud", "fraud_type"]
    assert truth.schema.field("is_fraud").type == pa.int64()
    assert tx.num_rows > 1500 and labels.num_rows > 0
    assert tx.column("transaction_id").null_count == 0


def test_categorical_columns_use_the_schema_vocabularies() -> None:
    frame = _frame(CONFIG, [date(2026, 1, 5)])
    assert set(frame["merchant_category"]) == set(schemas.MERCHANT_CATEGORIES)
    assert set(frame["merchant_country"]) <= set(schemas.COUNTRIES)
    assert set(frame["currency"]) <= set(schemas.CURRENCIES)
    assert set(frame["channel"]) == set(schemas.CHANNELS)
    euro = frame["merchant_country"].isin(["DE", "FR", "NL", "ES", "IT"])
    assert (frame.loc[euro, "currency"] == "EUR").all()
    assert (frame.loc[frame["merchant_country"] == "GB", "currency"] == "GBP").all()
    assert (frame.loc[frame["merchant_country"] == "NG", "currency"] == "USD").all()
    assert (frame["amount"] > 0).all()
    assert np.allclose(frame["amount"], frame["amount"].round(2))


def test_same_config_and_day_give_equal_tables() -> None:
    day = date(2026, 1, 9)
    first = simulate_transactions(CONFIG, day)
    labels = simulate_labels(CONFIG, day)
    _clear()
    again = simulate_transactions(CONFIG, day)
    assert first[0].equals(again[0]) and first[1].equals(again[1])
    assert labels.equals(simulate_labels(CONFIG, day))
    other_seed = simulate_transactions(SimulatorConfig(seed=12, rows_per_day=2000), day)[0]
    assert not first[0].equals(other_seed)


def test_day_generated_alone_equals_day_within_range(tmp_path: Path) -> None:
    write_landing(CONFIG, Interval.parse("2026-01-03", "2026-01-07"), str(tmp_path))
    _clear()
    alone, _ = simulate_transactions(CONFIG, date(2026, 1, 5))
    landed = pq.read_table(landing_path(str(tmp_path), "transactions", date(2026, 1, 5)))
    assert landed.equals(alone)
    labels_alone = simulate_labels(CONFIG, date(2026, 1, 6))
    assert pq.read_table(landing_path(str(tmp_path), "labels", date(2026, 1, 6))).equals(
        labels_alone
    )


def test_landing_bytes_are_reproducible(tmp_path: Path) -> None:
    interval = Interval.parse("2026-01-02", "2026-01-04")
    first = write_landing(CONFIG, interval, str(tmp_path / "a"))
    _clear()
    second = write_landing(CONFIG, interval, str(tmp_path / "b"))
    for path_a, path_b in zip(first.paths, second.paths, strict=True):
        assert Path(path_a).read_bytes() == Path(path_b).read_bytes()


# ------------------------------------------------------------------ time & seasonality


def test_timestamps_inside_day_sorted_and_unique_per_user() -> None:
    day = date(2026, 1, 8)
    frame = _frame(CONFIG, [day])
    ts = frame["ts"]
    assert str(ts.dtype) == "datetime64[us, UTC]"
    assert (ts >= _utc(day)).all() and (ts < _utc(day + timedelta(days=1))).all()
    assert ts.is_monotonic_increasing
    assert not frame.duplicated(["user_id", "ts"]).any()
    assert frame["transaction_id"].is_unique
    assert frame["transaction_id"].iloc[0] == "t2026010800000000"
    hours = ts.dt.hour.value_counts()
    assert (
        hours.reindex(range(2, 5), fill_value=0).sum() * 4
        < hours.reindex(range(17, 20), fill_value=0).sum()
    )


def test_unique_per_user_resolves_collisions_at_the_day_edges() -> None:
    user = np.array([1, 1, 1, 2, 2, 1, 3, 3], dtype=np.int64)
    last = DAY_US - 1
    ts = np.array([last, last, 5, 0, 0, last, 7, 9], dtype=np.int64)
    fixed = _unique_per_user(user, ts)
    assert fixed.min() >= 0 and fixed.max() <= last
    pairs = set(zip(user.tolist(), fixed.tolist(), strict=True))
    assert len(pairs) == len(user)
    assert fixed[2] == 5 and fixed[6] == 7 and fixed[7] == 9


def test_weekends_and_weekdays_have_different_volumes() -> None:
    friday = simulate_transactions(CONFIG, date(2026, 1, 2))[0].num_rows
    sunday = simulate_transactions(CONFIG, date(2026, 1, 4))[0].num_rows
    assert friday > sunday * 1.2


# ------------------------------------------------------------------ habits & fraud


def test_legit_spending_follows_habits() -> None:
    frame = _frame(CONFIG, _days(date(2026, 1, 5), 3))
    legit = frame[frame["is_fraud"] == 0]
    device_user = legit["device_id"].str[1:].astype(int) // 2
    assert (device_user == legit["user_id"]).all()  # only the user's own devices
    top = legit.groupby("user_id")["merchant_id"].agg(lambda m: m.value_counts().iloc[:6].sum())
    assert top.sum() / len(legit) > 0.75  # mostly favourite merchants
    home = legit.groupby("user_id")["merchant_country"].agg(lambda c: c.value_counts().index[0])
    at_home = legit["merchant_country"].to_numpy() == home.loc[legit["user_id"]].to_numpy()
    assert at_home.mean() > 0.6


def test_fraud_rate_near_config_and_three_patterns_present() -> None:
    frame = _frame(CONFIG, _days(date(2026, 1, 5), 7))
    rate = frame["is_fraud"].mean()
    assert 0.01 < rate < 0.035
    kinds = set(frame.loc[frame["is_fraud"] == 1, "fraud_type"])
    assert {"card_testing", "account_takeover", "merchant_compromise"} <= kinds
    assert "bust_out" not in kinds
    assert (frame.loc[frame["is_fraud"] == 0, "fraud_type"] == "").all()


def test_fraud_patterns_carry_learnable_signals() -> None:
    frame = _frame(CONFIG, _days(date(2026, 1, 5), 7))
    legit = frame[frame["is_fraud"] == 0]
    testing = frame[frame["fraud_type"] == "card_testing"]
    assert (testing["amount"] < 5).all()
    assert set(testing["merchant_category"]) <= {"digital_goods", "gaming"}
    assert (testing["channel"] == "online").all()
    per_card = testing.groupby(["card_id", testing["ts"].dt.date])
    assert (per_card.size() >= 5).all()
    assert (per_card["ts"].agg(lambda t: t.max() - t.min()) < pd.Timedelta(minutes=40)).all()

    takeover = frame[frame["fraud_type"] == "account_takeover"]
    assert not set(takeover["device_id"]) & set(legit["device_id"])  # never-seen devices
    assert takeover["amount"].median() > 3 * legit["amount"].median()
    home = legit.groupby("user_id")["merchant_country"].agg(lambda c: c.value_counts().index[0])
    known = takeover[takeover["user_id"].isin(home.index)]
    assert (known["merchant_country"].to_numpy() != home.loc[known["user_id"]].to_numpy()).all()
    span = takeover.groupby("device_id")["ts"].agg(lambda t: t.max() - t.min())
    assert (span <= pd.Timedelta(hours=1)).all()

    compromise = frame[frame["fraud_type"] == "merchant_compromise"]
    at_compromised = frame[frame["merchant_id"].isin(compromise["merchant_id"])]
    assert at_compromised["is_fraud"].mean() > 0.1
    assert at_compromised["is_fraud"].mean() > 5 * frame["is_fraud"].mean()


def test_compromised_merchants_change_weekly() -> None:
    pop = population_of(CONFIG)
    week1 = _compromised_merchants(CONFIG, pop, date(2026, 1, 1))
    same_week = _compromised_merchants(CONFIG, pop, date(2026, 1, 7))
    week2 = _compromised_merchants(CONFIG, pop, date(2026, 1, 8))
    assert np.array_equal(week1, same_week)
    assert not np.array_equal(week1, week2)


# ------------------------------------------------------------------ labels


def test_labels_are_delayed_and_reference_real_fraud() -> None:
    report_days = _days(date(2026, 1, 2), 14)
    labels = pd.concat([simulate_labels(CONFIG, d).to_pandas() for d in report_days])
    truth = _frame(CONFIG, _days(ANCHOR, 14))
    assert len(labels) > 0 and labels["transaction_id"].is_unique
    assert (labels["is_fraud"] == 1).all()
    assert (labels["label_ts"] > labels["transaction_ts"]).all()
    gap = (labels["label_ts"].dt.normalize() - labels["transaction_ts"].dt.normalize()).dt.days
    assert gap.between(1, CONFIG.max_label_delay_days).all()
    assert gap.mean() < CONFIG.max_label_delay_days / 2  # skewed towards short delays
    merged = labels.merge(truth, on="transaction_id", how="left", validate="one_to_one")
    assert (merged["is_fraud_y"] == 1).all()
    assert (merged["user_id_x"] == merged["user_id_y"]).all()
    assert (merged["merchant_id_x"] == merged["merchant_id_y"]).all()
    assert (merged["transaction_ts"] == merged["ts"]).all()


def test_labels_fall_inside_their_report_day_and_are_sorted() -> None:
    day = date(2026, 1, 9)
    labels = simulate_labels(CONFIG, day).to_pandas()
    assert (labels["label_ts"] >= _utc(day)).all()
    assert (labels["label_ts"] < _utc(day + timedelta(days=1))).all()
    assert labels["label_ts"].is_monotonic_increasing
    assert simulate_labels(CONFIG, ANCHOR).num_rows == 0  # nothing happened before the anchor


def test_about_ninety_percent_of_fraud_is_reported() -> None:
    config = SimulatorConfig(seed=3, rows_per_day=4000, fraud_rate=0.05, max_label_delay_days=4)
    tx_day = date(2026, 1, 3)
    _, truth = simulate_transactions(config, tx_day)
    frauds = set(truth.filter(pc.equal(truth["is_fraud"], 1))["transaction_id"].to_pylist())
    reported = set()
    for report_day in _days(tx_day, 6):
        ids = simulate_labels(config, report_day)["transaction_id"].to_pylist()
        reported |= {i for i in ids if i.startswith(f"t{tx_day:%Y%m%d}")}
    assert reported <= frauds
    assert 0.8 < len(reported) / len(frauds) < 0.97


# ------------------------------------------------------------------ drift


def test_new_fraud_pattern_appears_only_from_its_start() -> None:
    start = date(2026, 1, 8)
    drifted = SimulatorConfig(
        seed=11,
        rows_per_day=2000,
        fraud_rate=0.02,
        scenarios=(DriftScenario("new_fraud_pattern", start),),
    )
    before = _frame(drifted, _days(date(2026, 1, 4), 4))
    after = _frame(drifted, _days(start, 4))
    assert "bust_out" not in set(before["fraud_type"])
    bust = after[after["fraud_type"] == "bust_out"]
    assert len(bust) > 0
    assert set(bust["merchant_category"]) <= {"electronics", "travel"}
    assert bust["device_id"].str.startswith("d").all()  # the user's usual device
    assert bust["amount"].median() > 100
    baseline = simulate_transactions(CONFIG, date(2026, 1, 7))[0]
    assert simulate_transactions(drifted, date(2026, 1, 7))[0].equals(baseline)


def test_covariate_shift_raises_amounts_and_online_share() -> None:
    start = date(2026, 1, 8)
    shifted = SimulatorConfig(
        seed=11,
        rows_per_day=2000,
        fraud_rate=0.02,
        scenarios=(DriftScenario("covariate_shift", start),),
    )
    days = _days(start, 4)
    base = _frame(CONFIG, days)
    drift = _frame(shifted, days)
    assert drift["amount"].mean() > 1.2 * base["amount"].mean()
    assert (drift["channel"] == "online").mean() > (base["channel"] == "online").mean() + 0.05
    digital = drift["merchant_category"].isin(["electronics", "digital_goods"]).mean()
    assert digital > base["merchant_category"].isin(["electronics", "digital_goods"]).mean()
    before = date(2026, 1, 7)
    assert simulate_transactions(shifted, before)[0].equals(
        simulate_transactions(CONFIG, before)[0]
    )


# ------------------------------------------------------------------ bad batches & landing

BAD_DAY = date(2026, 1, 6)


def _landed(tmp_path: Path, bad: BadBatch) -> pa.Table:
    config = SimulatorConfig(seed=11, rows_per_day=2000, fraud_rate=0.02, bad_batches=(bad,))
    result = write_landing(config, Interval.for_day(BAD_DAY), str(tmp_path))
    assert result.days[0].bad_batches == (bad,)
    return pq.read_table(landing_path(str(tmp_path), bad.dataset, BAD_DAY))


def _clean(dataset: str) -> pa.Table:
    if dataset == "labels":
        return simulate_labels(CONFIG, BAD_DAY)
    return simulate_transactions(CONFIG, BAD_DAY)[0]


@pytest.mark.parametrize("dataset", ["transactions", "labels"])
def test_bad_batch_missing_column(tmp_path: Path, dataset: str) -> None:
    table = _landed(tmp_path, BadBatch("missing_column", BAD_DAY, dataset))  # type: ignore[arg-type]
    dropped = {"transactions": "amount", "labels": "is_fraud"}[dataset]
    assert dropped not in table.column_names
    assert table.num_rows == _clean(dataset).num_rows


def test_bad_batch_wrong_type(tmp_path: Path) -> None:
    table = _landed(tmp_path, BadBatch("wrong_type", BAD_DAY))
    assert table.schema.field("amount").type == pa.string()
    clean = _clean("transactions")
    expected = [
        f"{a:.2f} {c}"
        for a, c in zip(clean["amount"].to_pylist(), clean["currency"].to_pylist(), strict=True)
    ]
    assert table["amount"].to_pylist() == expected


def test_bad_batch_wrong_type_labels(tmp_path: Path) -> None:
    table = _landed(tmp_path, BadBatch("wrong_type", BAD_DAY, "labels"))
    assert table.schema.field("is_fraud").type == pa.string()


@pytest.mark.parametrize("dataset", ["transactions", "labels"])
def test_bad_batch_null_keys(tmp_path: Path, dataset: str) -> None:
    table = _landed(tmp_path, BadBatch("null_keys", BAD_DAY, dataset))  # type: ignore[arg-type]
    for column in ("transaction_id", "user_id"):
        assert table.schema.field(column).nullable
        assert 0 < table[column].null_count <= max(1, 0.12 * table.num_rows)


def test_bad_batch_negative_amount(tmp_path: Path) -> None:
    amounts = _landed(tmp_path, BadBatch("negative_amount", BAD_DAY))["amount"].to_numpy()
    assert 0 < (amounts < 0).sum() < 0.1 * len(amounts)


def test_bad_batch_absurd_amount(tmp_path: Path) -> None:
    amounts = _landed(tmp_path, BadBatch("absurd_amount", BAD_DAY))["amount"].to_numpy()
    assert 0 < (amounts == 1e9).sum() < 0.1 * len(amounts)


@pytest.mark.parametrize("dataset", ["transactions", "labels"])
def test_bad_batch_duplicate_ids(tmp_path: Path, dataset: str) -> None:
    table = _landed(tmp_path, BadBatch("duplicate_ids", BAD_DAY, dataset))  # type: ignore[arg-type]
    ids = pd.Series(table["transaction_id"].to_pylist())
    assert ids.duplicated().sum() > 0
    assert table.num_rows == _clean(dataset).num_rows + ids.duplicated().sum()
    assert set(ids) == set(_clean(dataset)["transaction_id"].to_pylist())


@pytest.mark.parametrize("dataset", ["transactions", "labels"])
def test_bad_batch_empty_file(tmp_path: Path, dataset: str) -> None:
    table = _landed(tmp_path, BadBatch("empty_file", BAD_DAY, dataset))  # type: ignore[arg-type]
    assert table.num_rows == 0
    assert table.schema.equals(schemas.SCHEMAS[dataset])


@pytest.mark.parametrize("dataset", ["transactions", "labels"])
def test_bad_batch_ts_outside_interval(tmp_path: Path, dataset: str) -> None:
    table = _landed(tmp_path, BadBatch("ts_outside_interval", BAD_DAY, dataset))  # type: ignore[arg-type]
    ts = table[schemas.EVENT_TIME_COLUMN[dataset]].to_pandas()
    outside = (ts < _utc(BAD_DAY)) | (ts >= _utc(BAD_DAY + timedelta(days=1)))
    assert 0 < outside.sum() < max(2, 0.1 * len(ts))
    assert table.schema.equals(schemas.SCHEMAS[dataset])


def test_bad_batch_unknown_currency(tmp_path: Path) -> None:
    currency = pd.Series(_landed(tmp_path, BadBatch("unknown_currency", BAD_DAY))["currency"])
    assert 0 < (currency == "XXX").sum() < 0.1 * len(currency)


def test_bad_batch_rejects_kinds_that_do_not_apply_to_labels() -> None:
    with pytest.raises(ValueError, match="does not apply"):
        BadBatch("negative_amount", BAD_DAY, "labels")
    with pytest.raises(ValueError, match="unknown"):
        BadBatch("bogus", BAD_DAY)  # type: ignore[arg-type]


def test_bad_batch_touches_only_its_day_and_dataset(tmp_path: Path) -> None:
    bad = BadBatch("empty_file", BAD_DAY)
    config = SimulatorConfig(seed=11, rows_per_day=2000, fraud_rate=0.02, bad_batches=(bad,))
    write_landing(config, Interval.parse(BAD_DAY, BAD_DAY + timedelta(days=2)), str(tmp_path))
    lake = str(tmp_path)
    assert pq.read_table(landing_path(lake, "transactions", BAD_DAY)).num_rows == 0
    next_day = BAD_DAY + timedelta(days=1)
    assert pq.read_table(landing_path(lake, "transactions", next_day)).equals(
        simulate_transactions(CONFIG, next_day)[0]
    )
    assert pq.read_table(landing_path(lake, "labels", BAD_DAY)).equals(_clean("labels"))
    assert pq.read_table(truth_path(lake, BAD_DAY)).num_rows > 0  # truth stays clean


def test_write_landing_writes_every_file_and_reports(tmp_path: Path) -> None:
    lake = str(tmp_path / "lake")
    seen: list[date] = []
    interval = Interval.parse("2026-01-03", "2026-01-06")
    result = write_landing(CONFIG, interval, lake, progress=seen.append)
    days = list(interval.days())
    assert seen == days == [d.day for d in result.days]
    for day_result in result.days:
        day = day_result.day
        assert day_result.transactions_path == landing_path(lake, "transactions", day)
        assert day_result.labels_path == landing_path(lake, "labels", day)
        assert day_result.truth_path == truth_path(lake, day)
        assert day_result.transactions_path.endswith(
            f"/landing/transactions/dt={day:%Y-%m-%d}/transactions.parquet"
        )
        tx = pq.read_table(day_result.transactions_path)
        truth = pq.read_table(day_result.truth_path)
        assert tx.num_rows == truth.num_rows == day_result.transaction_rows
        assert pq.read_table(day_result.labels_path).num_rows == day_result.label_rows
        assert sum(truth["is_fraud"].to_pylist()) == day_result.fraud_rows
    assert result.transaction_rows == sum(d.transaction_rows for d in result.days)
    leftovers = [p for p in Path(lake).rglob("*") if p.name.startswith(".")]
    assert leftovers == []


def test_days_before_anchor_are_rejected() -> None:
    with pytest.raises(ValueError, match="anchor"):
        simulate_transactions(CONFIG, ANCHOR - timedelta(days=1))


def test_config_defaults_derive_population_sizes() -> None:
    assert SimulatorConfig(rows_per_day=2000).users == 500
    assert SimulatorConfig(rows_per_day=100).users == 200
    assert SimulatorConfig(rows_per_day=2000).merchants == 100
    assert SimulatorConfig(rows_per_day=2000, n_merchants=70).merchants == 70
    with pytest.raises(ValueError):
        SimulatorConfig(fraud_rate=0.9)


def test_write_landing_goes_through_fsspec_uris() -> None:
    fsspec = pytest.importorskip("fsspec")
    lake = "memory://driftline-simulate-test/lake"
    day = date(2026, 1, 2)
    try:
        write_landing(CONFIG, Interval.for_day(day), lake)
        fs, path = fsspec.core.url_to_fs(landing_path(lake, "transactions", day))
        with fs.open(path, "rb") as handle:
            landed = pq.read_table(handle)
        assert landed.equals(simulate_transactions(CONFIG, day)[0])
        assert not [p for p in fs.find("/driftline-simulate-test") if "/." in p]
    finally:
        fs, path = fsspec.core.url_to_fs(lake)
        if fs.exists(path):
            fs.rm(path, recursive=True)
