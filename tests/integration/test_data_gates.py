"""Data gates that leak nothing (issue 14), with real GX, Spark and Feast at small scale.

Two good days (2026-01-01, 2026-01-02: raw, staged, features, online store) are built
once per module; every test works on its own copy of that state. Each bad input lands
on a later day (or re-delivers a good one) and the test checks the quarantine entry,
the message, that nothing reached raw, features or the online store, and that the
good days' files are byte-identical.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.settings import Settings, get_settings
from driftline.data import orphans
from driftline.data.feast import materialize_interval
from driftline.data.features import DATASET, build_features
from driftline.data.ingest import (
    BatchQuarantined,
    LandingFileError,
    ingest,
    publish_validated,
)
from driftline.data.locks import day_lock
from driftline.simulator import BadBatch, SimulatorConfig, write_landing
from tests.conftest import REPO

pytestmark = pytest.mark.slow

DAY1, DAY2, DAY3, DAY4 = (date(2026, 1, d) for d in (1, 2, 3, 4))
GOOD = Interval(DAY1, DAY3)
DATASETS = ("transactions", "labels")
CONFIG = SimulatorConfig(rows_per_day=400, fraud_rate=0.05)
BIN = Path(sys.executable).parent


def _env(home: Path) -> dict[str, str]:
    return {"DRIFTLINE_HOME": str(home), "DRIFTLINE_DATA_START": DAY1.isoformat()}


@pytest.fixture(scope="module")
def good_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A driftline home with two fully processed good days (built once per module)."""
    home = tmp_path_factory.mktemp("good") / "state"
    with pytest.MonkeyPatch.context() as patch:
        for name, value in _env(home).items():
            patch.setenv(name, value)
        get_settings.cache_clear()
        cfg = get_settings()
        write_landing(CONFIG, GOOD, cfg.lake_uri)
        for dataset in DATASETS:
            ingest(dataset, GOOD, cfg)
            publish_validated(dataset, GOOD, cfg)
        build_features(GOOD, cfg)
        materialize_interval(GOOD, cfg)
        get_settings.cache_clear()
    yield home


@pytest.fixture
def settings(
    good_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Settings]:
    """Settings on a private copy of the two good days."""
    home = tmp_path / "state"
    shutil.copytree(good_home, home, ignore=shutil.ignore_patterns("*.lock"))
    for name, value in _env(home).items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


# ------------------------------------------------------------------------------ helpers


def _land(settings: Settings, day: date, *bad: BadBatch) -> None:
    config = SimulatorConfig(rows_per_day=400, fraud_rate=0.05, bad_batches=bad)
    write_landing(config, Interval.for_day(day), settings.lake_uri)


def _run_day(settings: Settings, day: date) -> None:
    """What the daily DAG does for ``day``: ingest, validate, features, materialize."""
    interval = Interval.for_day(day)
    for dataset in DATASETS:
        ingest(dataset, interval, settings)
    for dataset in DATASETS:
        publish_validated(dataset, interval, settings)
    build_features(interval, settings)
    materialize_interval(interval, settings)


def _read(uri: str) -> bytes:
    fs, path = lake.filesystem(uri)
    return bytes(fs.cat_file(path))


def _files_of(settings: Settings, *days: date) -> dict[str, str]:
    """Hash of every file of ``days`` in the raw, staging and features zones."""
    root = Path(settings.lake_uri)
    tags = {f"dt={d:%Y-%m-%d}" for d in days}
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for zone in ("raw", "staging", "features")
        for p in sorted((root / zone).rglob("*"))
        if p.is_file() and p.parent.name in tags
    }


def _online(settings: Settings) -> list[tuple[object, ...]]:
    with sqlite3.connect(settings.feast_online_path) as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return sorted(row for t in tables for row in db.execute(f'select * from "{t}"'))


def _hidden_leftovers(settings: Settings) -> list[str]:
    root = Path(settings.lake_uri)
    return [str(p) for p in root.rglob(".dt=*")]


def _assert_nothing_leaked(
    settings: Settings, dataset: str, day: date, good: dict[str, str], online: list[object]
) -> None:
    assert not lake.exists(lake.partition_uri(settings.lake_uri, "raw", dataset, day))
    assert not lake.exists(lake.partition_uri(settings.lake_uri, "features", DATASET, day))
    assert _online(settings) == online
    assert _files_of(settings, DAY1, DAY2) == good
    assert not _hidden_leftovers(settings)


def _assert_entry(entry: str, settings: Settings, dataset: str, day: date, n: int) -> dict:
    """The quarantine entry holds the landed bytes unchanged, the result and the reason."""
    base = lake.partition_uri(settings.lake_uri, "quarantine", dataset, day)
    assert entry == f"{base}/attempt={n}"
    landed = lake.landing_file(settings.lake_uri, dataset, day)
    assert _read(f"{entry}/{dataset}.parquet") == _read(landed)
    result = json.loads(_read(f"{entry}/validation_result.json"))
    assert result["reason"] and result["result"]
    assert _read(f"{entry}/reason.txt").decode().strip() == result["reason"]
    return dict(result)


# ------------------------------------------------------------------- non-finite amounts

NON_FINITE = {
    "nan_amount": ("expect_column_values_to_be_finite(amount)", "nan"),
    "inf_amount": ("expect_column_values_to_be_finite(amount)", "+inf"),
}


@pytest.mark.parametrize("kind", sorted(NON_FINITE))
def test_non_finite_amounts_are_quarantined(kind: str, settings: Settings) -> None:
    good, online = _files_of(settings, DAY1, DAY2), _online(settings)
    _land(settings, DAY3, BadBatch(kind, DAY3))  # type: ignore[arg-type]

    with pytest.raises(BatchQuarantined) as rejected:
        _run_day(settings, DAY3)

    check, count_kind = NON_FINITE[kind]
    message = str(rejected.value)
    assert check in message and count_kind in message
    assert "driftline ingest --dataset transactions --start 2026-01-03" in message
    result = _assert_entry(rejected.value.quarantine_uri, settings, "transactions", DAY3, 1)
    [finite] = result["result"]["driftline_checks"]
    assert finite["expectation_config"]["kwargs"] == {"column": "amount"}
    assert finite["result"]["unexpected_count"] > 0
    _assert_nothing_leaked(settings, "transactions", DAY3, good, online)


# ------------------------------------------------------------------ CSV named .parquet


@pytest.mark.parametrize("dataset", DATASETS)
def test_csv_named_parquet_is_named_and_kept_unchanged(dataset: str, settings: Settings) -> None:
    good, online = _files_of(settings, DAY1, DAY2), _online(settings)
    _land(settings, DAY3, BadBatch("csv_as_parquet", DAY3, dataset))  # type: ignore[arg-type]
    assert _read(lake.landing_file(settings.lake_uri, dataset, DAY3)).startswith(
        b'"transaction_id"'
    )

    with pytest.raises(BatchQuarantined) as rejected:
        ingest(dataset, Interval.for_day(DAY3), settings)

    message = str(rejected.value)
    assert 'CSV text (first line \'"transaction_id"' in message
    assert "where Parquet was expected" in message
    assert f"{dataset}.parquet" in message and "quarantined unchanged" in message
    entry = rejected.value.quarantine_uri
    result = _assert_entry(entry, settings, dataset, DAY3, 1)
    assert result["result"]["format"].startswith("CSV text")

    # validate afterwards names what happened, not "run ingest first"
    with pytest.raises(LandingFileError) as nothing:
        publish_validated(dataset, Interval.for_day(DAY3), settings)
    assert f"quarantined at {entry}" in str(nothing.value)
    assert "CSV text" in str(nothing.value)
    assert not lake.exists(lake.partition_uri(settings.lake_uri, "staging", dataset, DAY3))
    _assert_nothing_leaked(settings, dataset, DAY3, good, online)


# --------------------------------------------------------- chargebacks that point nowhere


def test_chargebacks_for_unknown_transactions_are_set_apart(settings: Settings) -> None:
    good, online = _files_of(settings, DAY1, DAY2), _online(settings)
    _land(settings, DAY3, BadBatch("unknown_transactions", DAY3, "labels"))
    landed = pq.read_table(lake.landing_file(settings.lake_uri, "labels", DAY3))
    fake = pc.starts_with(landed["transaction_id"], "unknown-")
    fakes = landed.filter(fake)
    assert fakes.num_rows == 30

    _run_day(settings, DAY3)  # the rest of the batch passes

    raw = lake.read_file(lake.partition_file(settings.lake_uri, "raw", "labels", DAY3))
    assert raw.num_rows == landed.num_rows - 30
    assert not set(fakes["transaction_id"].to_pylist()) & set(raw["transaction_id"].to_pylist())
    [entry] = orphans.quarantine.entries(settings.lake_uri, "labels", DAY3)
    assert entry.endswith("attempt=1")
    set_apart = pq.read_table(f"{entry}/orphans.parquet")
    assert sorted(set_apart["transaction_id"].to_pylist()) == sorted(
        fakes["transaction_id"].to_pylist()
    )
    for why in set_apart["reason"].to_pylist():  # their (copied) transaction days exist
        assert why.startswith("no transaction with this id, user and merchant on 2026-01-0")
    reason = json.loads(_read(f"{entry}/reason.json"))
    assert "30 chargebacks" in reason["reason"] and reason["result"]["orphans"] == 30
    assert lake.read_file(orphans.pending_file(settings, DAY3)).num_rows == 30

    # never counted: the fake merchants' reports are what the published labels give
    features = lake.read_file(lake.partition_file(settings.lake_uri, "features", DATASET, DAY3))
    labels = pq.read_table(
        [lake.partition_file(settings.lake_uri, "raw", "labels", d) for d in (DAY1, DAY2, DAY3)]
    )
    for merchant in set(fakes["merchant_id"].to_pylist()):
        of_merchant = pc.equal(labels["merchant_id"], merchant)
        real = int(pc.sum(pc.and_(of_merchant, pc.equal(labels["is_fraud"], 1))).as_py() or 0)
        rows = features.filter(pc.equal(features["merchant_id"], merchant))
        if rows.num_rows:
            assert pc.max(rows["merchant_fraud_reports_14d"]).as_py() <= real
    assert _files_of(settings, DAY1, DAY2) == good
    assert len(_online(settings)) >= len(online)
    assert not _hidden_leftovers(settings)


def test_chargebacks_of_a_quarantined_day_wait_and_are_picked_up(settings: Settings) -> None:
    good = _files_of(settings, DAY1, DAY2)
    _land(settings, DAY3, BadBatch("duplicate_ids", DAY3))
    _land(settings, DAY4)
    ingest("transactions", Interval.for_day(DAY3), settings)
    with pytest.raises(BatchQuarantined):
        publish_validated("transactions", Interval.for_day(DAY3), settings)
    landed = pq.read_table(lake.landing_file(settings.lake_uri, "labels", DAY4))
    waiting = [
        tid
        for tid, ts in zip(
            landed["transaction_id"].to_pylist(), landed["transaction_ts"].to_pylist(), strict=True
        )
        if ts.date() == DAY3
    ]
    assert waiting  # chargebacks reported on day 4 for transactions of day 3

    ingest("labels", Interval.for_day(DAY4), settings)
    publish_validated("labels", Interval.for_day(DAY4), settings)

    raw4 = lake.partition_file(settings.lake_uri, "raw", "labels", DAY4)
    assert not set(waiting) & set(lake.read_file(raw4)["transaction_id"].to_pylist())
    pending = lake.read_file(orphans.pending_file(settings, DAY4))
    assert sorted(pending["transaction_id"].to_pylist()) == sorted(waiting)
    assert all("2026-01-03 was quarantined" in r for r in pending["reason"].to_pylist())

    # the corrected re-delivery of day 3 is published: its chargebacks are picked up
    _land(settings, DAY3)
    ingest("transactions", Interval.for_day(DAY3), settings)
    publish_validated("transactions", Interval.for_day(DAY3), settings)

    published = lake.read_file(raw4)
    assert set(waiting) <= set(published["transaction_id"].to_pylist())
    assert published.num_rows == landed.num_rows
    assert not lake.exists(orphans.pending_file(settings, DAY4))
    assert _files_of(settings, DAY1, DAY2) == good


# ------------------------------------------------- quarantine keeps every rejection


def test_rejected_redeliveries_of_a_good_day_keep_it_and_every_entry(settings: Settings) -> None:
    good, online = _files_of(settings, DAY1, DAY2), _online(settings)
    entries = []
    for attempt, kind in enumerate(("duplicate_ids", "nan_amount"), start=1):
        _land(settings, DAY2, BadBatch(kind, DAY2))  # type: ignore[arg-type]
        landed = _read(lake.landing_file(settings.lake_uri, "transactions", DAY2))
        ingest("transactions", Interval.for_day(DAY2), settings)
        with pytest.raises(BatchQuarantined) as rejected:
            publish_validated("transactions", Interval.for_day(DAY2), settings)
        entry = rejected.value.quarantine_uri
        assert entry.endswith(f"attempt={attempt}")
        assert _read(f"{entry}/transactions.parquet") == landed
        entries.append((entry, landed, _read(f"{entry}/validation_result.json")))
        # the good day's raw, staged and feature data are as they were
        assert _files_of(settings, DAY1, DAY2) == good
        assert _online(settings) == online
    for entry, landed, result in entries:  # the first rejection survived the second
        assert _read(f"{entry}/transactions.parquet") == landed
        assert _read(f"{entry}/validation_result.json") == result
    assert "expect_column_values_to_be_unique" in json.loads(entries[0][2])["reason"]
    assert "expect_column_values_to_be_finite" in json.loads(entries[1][2])["reason"]
    assert not _hidden_leftovers(settings)
    assert not lake.exists(f"{settings.lake_uri}/staging/_accepted/transactions/dt=2026-01-02")


# ------------------------------------------------------------ one run per dataset + day


def _driftline(settings: Settings, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, **_env(settings.home)}
    return subprocess.Popen(
        [str(BIN / "driftline"), *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_held_day_is_refused_clearly_by_another_process(settings: Settings) -> None:
    _land(settings, DAY3)
    with day_lock(settings, "transactions", DAY3):
        other = _driftline(settings, "ingest", "--dataset", "transactions", "--start", "2026-01-03")
        _, err = other.communicate(timeout=300)
    assert other.returncode == 2, err
    assert "another run holds dataset transactions day 2026-01-03" in " ".join(err.split())
    assert "Traceback" not in err
    assert not lake.exists(lake.partition_uri(settings.lake_uri, "staging", "transactions", DAY3))
    assert not _hidden_leftovers(settings)


def test_two_processes_on_the_same_new_day(settings: Settings) -> None:
    _land(settings, DAY3)
    script = (
        "import sys\n"
        "from driftline.core.interval import Interval\n"
        "from driftline.data.ingest import DayLocked, ingest, publish_validated\n"
        "day = Interval.for_day('2026-01-03')\n"
        "for _ in range(5):\n"
        "    try:\n"
        "        ingest('transactions', day); publish_validated('transactions', day)\n"
        "        print('published')\n"
        "    except DayLocked as held:\n"
        "        print('locked:', held)\n"
    )
    env = {**os.environ, **_env(settings.home)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (out, err) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, err
        for line in out.splitlines():
            assert line == "published" or line.startswith(
                "locked: another run holds dataset transactions day 2026-01-03"
            ), line
    assert sum(out.count("published") for out, _ in outputs) >= 1
    assert not _hidden_leftovers(settings)
    raw = lake.read_file(lake.partition_file(settings.lake_uri, "raw", "transactions", DAY3))
    landed = pq.read_table(lake.landing_file(settings.lake_uri, "transactions", DAY3))
    assert raw.num_rows == landed.num_rows == len(set(raw["transaction_id"].to_pylist()))
    assert _read(lake.partition_file(settings.lake_uri, "staging", "transactions", DAY3)) == _read(
        lake.landing_file(settings.lake_uri, "transactions", DAY3)
    )


# ------------------------------------------------------------------ messages in the CLI


def test_cli_names_missing_partitions_without_a_traceback(settings: Settings) -> None:
    for stage, fragment in (
        ("materialize", "feature partitions missing for [2026-01-05, 2026-01-06); run features"),
        ("features", "missing raw transactions: 2026-01-03..2026-01-05"),
    ):
        run = _driftline(settings, stage, "--start", "2026-01-05")
        _, err = run.communicate(timeout=300)
        assert run.returncode == 2, err
        assert fragment in " ".join(err.split()), err
        assert "Traceback" not in err
