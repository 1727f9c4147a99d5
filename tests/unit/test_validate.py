"""Tests of driftline.data.validate: committed GX suites run through their checkpoints."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from driftline.core import schemas
from driftline.core.interval import Interval
from driftline.core.settings import PROJECT_ROOT, Settings
from driftline.data import validate
from driftline.data.validate import (
    SUITES,
    ValidationFailed,
    ValidationOutcome,
    describe_failures,
    load_suite,
    require_valid,
    reset_cache,
    result_uri,
    validate_frame,
)

DAY = Interval.for_day("2026-01-05")
ROWS = 50
GX_DIR = PROJECT_ROOT / "great_expectations"


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    """Settings whose GX state lives in a temporary folder."""
    yield Settings(home=tmp_path)
    reset_cache()


def _timestamps(rng: np.random.Generator, n: int) -> pd.Series:
    offsets = pd.to_timedelta(np.sort(rng.integers(0, 86_400, n)), unit="s")
    return pd.Series(pd.Timestamp(DAY.start) + offsets)


def transactions(n: int = ROWS, seed: int = 1) -> pd.DataFrame:
    """A valid transactions frame, typed as ``TRANSACTIONS.to_pandas()`` would type it."""
    rng = np.random.default_rng(seed)
    columns = {
        "transaction_id": [f"tx-{seed}-{i}" for i in range(n)],
        "ts": _timestamps(rng, n),
        "user_id": rng.integers(1, 500, n),
        "card_id": rng.integers(1, 900, n),
        "merchant_id": rng.integers(1, 80, n),
        "merchant_category": rng.choice(schemas.MERCHANT_CATEGORIES, n),
        "merchant_country": rng.choice(schemas.COUNTRIES, n),
        "amount": rng.uniform(0.5, 900.0, n).round(2),
        "currency": rng.choice(schemas.CURRENCIES, n),
        "channel": rng.choice(schemas.CHANNELS, n),
        "device_id": [f"dev-{i % 17}" for i in range(n)],
    }
    return pa.Table.from_pydict(columns, schema=schemas.TRANSACTIONS).to_pandas()


def labels(n: int = 20) -> pd.DataFrame:
    """A valid labels frame: chargebacks reported within the interval."""
    rng = np.random.default_rng(2)
    label_ts = _timestamps(rng, n)
    columns = {
        "transaction_id": [f"tx-old-{i}" for i in range(n)],
        "user_id": rng.integers(1, 500, n),
        "merchant_id": rng.integers(1, 80, n),
        "transaction_ts": label_ts - pd.Timedelta(days=3),
        "label_ts": label_ts,
        "is_fraud": rng.integers(0, 2, n),
    }
    return pa.Table.from_pydict(columns, schema=schemas.LABELS).to_pandas()


def features(n: int = ROWS) -> pd.DataFrame:
    """A valid per-transaction feature frame as produced by the feature job."""
    rng = np.random.default_rng(3)
    c1 = rng.integers(1, 3, n)
    c24 = c1 + rng.integers(0, 5, n)
    m24 = rng.integers(1, 40, n)
    m14 = m24 + rng.integers(0, 400, n)
    reports = np.minimum(rng.integers(0, 5, n), m14)
    return pd.DataFrame(
        {
            "transaction_id": [f"tx-{i}" for i in range(n)],
            "user_id": rng.integers(1, 500, n),
            "merchant_id": rng.integers(1, 80, n),
            "event_timestamp": _timestamps(rng, n).astype("datetime64[us, UTC]"),
            "amount": rng.uniform(1, 500, n),
            "user_txn_count_1h": c1,
            "user_txn_count_24h": c24,
            "user_txn_count_7d": c24 + rng.integers(0, 20, n),
            "user_amount_sum_24h": rng.uniform(1, 3000, n),
            "user_amount_mean_7d": rng.uniform(1, 500, n),
            "user_amount_std_7d": rng.uniform(0, 200, n),
            "user_amount_max_24h": rng.uniform(1, 900, n),
            "user_distinct_merchants_24h": rng.integers(1, 4, n),
            "user_distinct_countries_24h": rng.integers(1, 3, n),
            "user_new_device": rng.integers(0, 2, n),
            "user_seconds_since_prev_txn": np.where(
                c24 > 1, rng.uniform(1, 86_400, n), 7 * 86_400.0
            ),
            "user_amount_to_mean_7d": rng.uniform(0.1, 5, n),
            "merchant_txn_count_24h": m24,
            "merchant_txn_count_14d": m14,
            "merchant_fraud_reports_14d": reports,
            "merchant_fraud_rate_14d": reports / m14,
        }
    )


def assert_fails(outcome: ValidationOutcome, expectation: str, *needles: str) -> str:
    """Assert ``outcome`` failed with ``expectation`` on a line containing ``needles``."""
    assert outcome.success is False
    lines = [line for line in outcome.failed_expectations if line.startswith(expectation)]
    matching = [line for line in lines if all(needle in line for needle in needles)]
    assert matching, f"{expectation} {needles} not in {outcome.failed_expectations}"
    return matching[0]


# ------------------------------------------------------------------------ definitions


@pytest.mark.parametrize("suite_name", SUITES)
def test_committed_suites_load_completely(suite_name: str) -> None:
    raw = json.loads((GX_DIR / "expectations" / f"{suite_name}.json").read_text())
    suite = load_suite(suite_name, GX_DIR)
    assert suite.name == suite_name
    assert len(suite.expectations) == len(raw["expectations"]) > 5
    checkpoint = json.loads((GX_DIR / "checkpoints" / f"{suite_name}.json").read_text())
    assert checkpoint["validation_definitions"] == [{"name": suite_name}]
    assert any(action["type"] == "update_data_docs" for action in checkpoint["actions"])


def _kwargs_of(suite_name: str, expectation_type: str) -> list[dict[str, object]]:
    raw = json.loads((GX_DIR / "expectations" / f"{suite_name}.json").read_text())
    return [e["kwargs"] for e in raw["expectations"] if e["type"] == expectation_type]


def test_suites_agree_with_canonical_schemas() -> None:
    [tx_columns] = _kwargs_of("raw_transactions", "expect_table_columns_to_match_set")
    assert tx_columns["column_set"] == schemas.TRANSACTIONS.names
    [label_columns] = _kwargs_of("raw_labels", "expect_table_columns_to_match_set")
    assert label_columns["column_set"] == schemas.LABELS.names
    sets = {
        k["column"]: k["value_set"]
        for k in _kwargs_of("raw_transactions", "expect_column_values_to_be_in_set")
    }
    assert sets["currency"] == list(schemas.CURRENCIES)


# ----------------------------------------------------------------------- transactions


def test_valid_transactions_pass_and_build_data_docs(settings: Settings) -> None:
    df = transactions()
    assert str(df["ts"].dtype) == "datetime64[us, UTC]"
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    assert outcome.success, outcome.failed_expectations
    assert outcome.failed_expectations == ()
    assert outcome.statistics["unsuccessful_expectations"] == 0
    assert outcome.statistics["evaluated_expectations"] >= 15
    json.dumps(outcome.result)
    assert outcome.data_docs_index is not None
    index = Path(outcome.data_docs_index)
    assert index.is_file() and index.name == "index.html"
    assert index.is_relative_to(settings.gx_state_dir)
    assert "raw_transactions" in index.read_text()
    assert describe_failures(outcome).endswith("passed.")


def test_run_time_state_never_touches_the_repository(settings: Settings) -> None:
    before = sorted(p.relative_to(GX_DIR) for p in GX_DIR.rglob("*"))
    validate_frame(transactions(), "raw_transactions", DAY, settings)
    assert sorted(p.relative_to(GX_DIR) for p in GX_DIR.rglob("*")) == before
    stored = list((settings.gx_state_dir).rglob("*.json"))
    assert any("validations" in p.parts for p in stored)


def test_every_verdict_is_in_the_lake_and_a_rerun_replaces_it(settings: Settings) -> None:
    """Pass or fail, the day's verdict is one JSON object in the lake; the rerun's wins."""
    uri = result_uri(settings.lake_uri, "raw_transactions", DAY.start.date())
    bad = transactions()
    bad.loc[0, "amount"] = -1.0
    validate_frame(bad, "raw_transactions", DAY, settings)
    failed = json.loads(Path(uri).read_text())
    assert failed["success"] is False
    assert any("amount" in line for line in failed["failed_expectations"])
    assert failed["interval"]["start"] == DAY.start.isoformat()
    validate_frame(transactions(), "raw_transactions", DAY, settings)
    passed = json.loads(Path(uri).read_text())
    assert passed["success"] is True and passed["failed_expectations"] == []
    assert passed["statistics"]["unsuccessful_expectations"] == 0
    folder = Path(uri).parent
    assert sorted(p.name for p in folder.iterdir()) == ["result.json"]


def test_missing_column(settings: Settings) -> None:
    outcome = validate_frame(
        transactions().drop(columns=["amount"]), "raw_transactions", DAY, settings
    )
    assert_fails(outcome, "expect_table_columns_to_match_set", "missing", "amount")


def test_wrong_type_is_a_failure_not_a_crash(settings: Settings) -> None:
    df = transactions()
    df["amount"] = df["amount"].astype(str)
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    assert_fails(outcome, "expect_column_values_to_be_of_type(amount)", f"of {ROWS}")


def test_naive_timestamps_fail_the_type_check(settings: Settings) -> None:
    df = transactions()
    df["ts"] = df["ts"].dt.tz_localize(None)
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    assert_fails(outcome, "expect_column_values_to_be_of_type(ts)", "Timestamp")


@pytest.mark.parametrize("column", ["transaction_id", "user_id", "card_id", "merchant_id", "ts"])
def test_null_keys(settings: Settings, column: str) -> None:
    df = transactions()
    df[column] = df[column].astype(object)
    df.loc[[3, 7], column] = None
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    assert_fails(outcome, f"expect_column_values_to_not_be_null({column})", "2 unexpected")


def test_negative_amount(settings: Settings) -> None:
    df = transactions()
    df.loc[5, "amount"] = -12.5
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    line = assert_fails(outcome, "expect_column_values_to_be_between(amount)", "1 unexpected")
    assert "-12.5" in line


def test_zero_amount_is_rejected(settings: Settings) -> None:
    df = transactions()
    df.loc[5, "amount"] = 0.0
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    assert_fails(outcome, "expect_column_values_to_be_between(amount)", "1 unexpected")


def test_absurd_amount(settings: Settings) -> None:
    df = transactions()
    df.loc[[1, 2], "amount"] = [50_000.01, 1e9]
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    line = assert_fails(outcome, "expect_column_values_to_be_between(amount)", "2 unexpected")
    assert "1e+09" in line


def test_duplicate_transaction_ids(settings: Settings) -> None:
    df = transactions()
    df.loc[9, "transaction_id"] = df.loc[8, "transaction_id"]
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    assert_fails(outcome, "expect_column_values_to_be_unique(transaction_id)", "2 unexpected")


def test_empty_frame(settings: Settings) -> None:
    outcome = validate_frame(transactions().iloc[:0], "raw_transactions", DAY, settings)
    line = assert_fails(outcome, "expect_table_row_count_to_be_between", "observed 0")
    assert ">= 1" in line


@pytest.mark.parametrize(
    "ts", ["2026-01-06T00:00:00+00:00", "2026-01-04T23:59:59+00:00", "2027-01-05T10:00:00+00:00"]
)
def test_timestamp_outside_interval(settings: Settings, ts: str) -> None:
    df = transactions()
    df.loc[0, "ts"] = pd.Timestamp(ts)
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    assert_fails(outcome, "expect_column_values_to_be_between(ts)", "1 unexpected")


def test_same_suite_serves_another_day(settings: Settings) -> None:
    df = transactions()
    assert validate_frame(df, "raw_transactions", DAY, settings).success
    next_day = Interval.for_day("2026-01-06")
    outcome = validate_frame(df, "raw_transactions", next_day, settings)
    assert_fails(outcome, "expect_column_values_to_be_between(ts)", f"{ROWS} unexpected")


def test_unknown_currency(settings: Settings) -> None:
    df = transactions()
    df.loc[4, "currency"] = "XBT"
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    line = assert_fails(outcome, "expect_column_values_to_be_in_set(currency)", "1 unexpected")
    assert "'XBT'" in line


def test_describe_failures_and_exception(settings: Settings) -> None:
    df = transactions()
    df.loc[4, "currency"] = "XBT"
    df.loc[5, "amount"] = -1.0
    outcome = validate_frame(df, "raw_transactions", DAY, settings)
    message = describe_failures(outcome)
    assert "raw_transactions" in message and "\n" not in message
    assert "expect_column_values_to_be_in_set(currency)" in message
    assert "expect_column_values_to_be_between(amount)" in message
    with pytest.raises(ValidationFailed, match="currency") as caught:
        require_valid(df, "raw_transactions", DAY, settings)
    assert caught.value.outcome.success is False


# ----------------------------------------------------------------------------- labels


def test_valid_labels_pass(settings: Settings) -> None:
    outcome = validate_frame(labels(), "raw_labels", DAY, settings)
    assert outcome.success, outcome.failed_expectations


def test_empty_labels_are_valid(settings: Settings) -> None:
    outcome = validate_frame(labels().iloc[:0], "raw_labels", DAY, settings)
    assert outcome.success, outcome.failed_expectations


def test_labels_missing_column(settings: Settings) -> None:
    df = labels().iloc[:0].drop(columns=["is_fraud"])
    outcome = validate_frame(df, "raw_labels", DAY, settings)
    assert_fails(outcome, "expect_table_columns_to_match_set", "is_fraud")


def test_labels_is_fraud_out_of_set(settings: Settings) -> None:
    df = labels()
    df.loc[0, "is_fraud"] = 2
    outcome = validate_frame(df, "raw_labels", DAY, settings)
    assert_fails(outcome, "expect_column_values_to_be_in_set(is_fraud)", "1 unexpected")


def test_label_before_transaction(settings: Settings) -> None:
    df = labels()
    df.loc[1, "transaction_ts"] = df.loc[1, "label_ts"] + pd.Timedelta(hours=1)
    outcome = validate_frame(df, "raw_labels", DAY, settings)
    assert_fails(
        outcome,
        "expect_column_pair_values_a_to_be_greater_than_b(label_ts, transaction_ts)",
        "1 unexpected",
    )


# --------------------------------------------------------------------------- features


def test_valid_features_pass(settings: Settings) -> None:
    outcome = validate_frame(features(), "features", DAY, settings)
    assert outcome.success, outcome.failed_expectations


def test_fraud_rate_above_one(settings: Settings) -> None:
    df = features()
    df.loc[2, "merchant_fraud_rate_14d"] = 1.5
    outcome = validate_frame(df, "features", DAY, settings)
    assert_fails(
        outcome, "expect_column_values_to_be_between(merchant_fraud_rate_14d)", "1 unexpected"
    )


def test_feature_windows_must_nest(settings: Settings) -> None:
    df = features()
    df.loc[3, "user_txn_count_1h"] = df.loc[3, "user_txn_count_24h"] + 1
    outcome = validate_frame(df, "features", DAY, settings)
    assert_fails(
        outcome,
        "expect_column_pair_values_a_to_be_greater_than_b(user_txn_count_24h, user_txn_count_1h)",
    )


def test_feature_counts_include_current_transaction(settings: Settings) -> None:
    df = features()
    df.loc[0, "merchant_txn_count_24h"] = 0
    outcome = validate_frame(df, "features", DAY, settings)
    assert_fails(
        outcome, "expect_column_values_to_be_between(merchant_txn_count_24h)", "1 unexpected"
    )


# ------------------------------------------------------------------------ concurrency


CHILD = """
import sys
from pathlib import Path

import pandas as pd

from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.validate import validate_frame

home, suite, frame, day = sys.argv[1:]
outcome = validate_frame(
    pd.read_parquet(frame), suite, Interval.for_day(day), Settings(home=Path(home))
)
print("OK" if outcome.success else outcome.failed_expectations)
"""


def test_parallel_processes_share_one_state_dir(tmp_path: Path) -> None:
    frames = {"raw_transactions": transactions(), "raw_labels": labels()}
    for name, frame in frames.items():
        frame.to_parquet(tmp_path / f"{name}.parquet")
    home = tmp_path / "home"
    runs = list(frames)  # Airflow validates transactions and labels in parallel
    children = [
        subprocess.Popen(
            [
                sys.executable,
                "-c",
                CHILD,
                str(home),
                name,
                str(tmp_path / f"{name}.parquet"),
                DAY.start.date().isoformat(),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in runs
    ]
    outputs = [child.communicate(timeout=300) for child in children]
    assert [child.returncode for child in children] == [0] * len(runs), outputs
    assert [out.strip().splitlines()[-1] for out, _ in outputs] == ["OK"] * len(runs)
    state = Settings(home=home).gx_state_dir
    assert len(list((state / "uncommitted" / "validations").rglob("*.json"))) == len(runs)
    index = (state / "uncommitted/data_docs/local_site/index.html").read_text()
    assert "raw_labels" in index and "raw_transactions" in index


def _compiled_templates(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Names of the templates Jinja compiles from now on (in this process)."""
    import jinja2

    compiled: list[str] = []
    original = jinja2.Environment.compile

    def counting(self: jinja2.Environment, source: Any, name: str | None = None, *a: Any) -> Any:
        compiled.append(str(name))
        return original(self, source, name, *a)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    return compiled


def test_data_docs_of_a_second_validation_compile_no_template(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GX builds new views per docs update; ours keep the compiled templates (gx_views)."""
    from driftline.data.gx_views import BYTECODE

    BYTECODE.clear()
    compiled = _compiled_templates(monkeypatch)
    assert validate_frame(labels(), "raw_labels", DAY, settings).success
    first = len(compiled)
    assert validate_frame(labels(), "raw_labels", DAY, settings).success
    assert first > 10  # the first docs build compiled GX's templates
    assert compiled[first:] == []
    docs = settings.gx_state_dir / "uncommitted" / "data_docs" / "local_site"
    assert (docs / "index.html").is_file()
    assert len(list((docs / "validations").rglob("*.html"))) == 2


def _timeless(page: str) -> str:
    """A page without what differs per render: times (links get ``?d=<now>``) and the
    element ids GX draws at random."""
    page = re.sub(r"\d{8}T\d{6}\.\d{6}Z", "<now>", page)
    return re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", page)


def test_the_cached_data_docs_view_renders_what_gx_renders(settings: Settings) -> None:
    """The same page, byte for byte, as GX's own view: compiled, then from the cache."""
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view.view import DefaultJinjaPageView

    from driftline.data.gx_views import BYTECODE, CachedPageView

    assert validate_frame(labels(), "raw_labels", DAY, settings).success
    runtime = validate._runtime(settings.gx_state_dir, settings.gx_docs_index_limit)
    store = runtime.context.validation_results_store
    result = store.get(store.list_keys()[0])

    def page(view: Any) -> str:  # a fresh document each time: rendering changes it
        return _timeless(view.render(ValidationResultsPageRenderer().render(result)))

    BYTECODE.clear()
    stock = page(DefaultJinjaPageView())
    assert page(CachedPageView()) == stock  # compiled here, then kept
    assert page(CachedPageView()) == stock  # from the cache


def test_the_data_docs_site_is_gx_default_with_the_cached_views(settings: Settings) -> None:
    validate_frame(labels(), "raw_labels", DAY, settings)
    runtime = validate._runtime(settings.gx_state_dir, settings.gx_docs_index_limit)
    config = runtime.context.get_config()
    site = config.data_docs_sites["local_site"]
    assert site["class_name"] == "SiteBuilder"
    assert site["site_index_builder"]["view"]["class_name"] == "CachedIndexPageView"
    views = {section["view"]["class_name"] for section in site["site_section_builders"].values()}
    assert views == {"CachedPageView"}


def test_the_data_docs_index_lists_the_newest_results_only(tmp_path: Path) -> None:
    """gx_docs_index_limit: GX reads every listed result per docs update; pages stay."""
    settings = Settings(home=tmp_path, gx_docs_index_limit=2)
    for _ in range(3):
        assert validate_frame(labels(), "raw_labels", DAY, settings).success
    docs = settings.gx_state_dir / "uncommitted" / "data_docs" / "local_site"
    pages = list((docs / "validations").rglob("*.html"))
    assert len(pages) == 3
    index = (docs / "index.html").read_text()
    listed = [page for page in pages if page.name in index and page.parent.name in index]
    assert len(listed) == 2
    reset_cache()
