"""The prediction log in the lake: buffered per process, one immutable file per flush,
every row in exactly one file, nothing lost when a replica gets SIGTERM.

The first tests drive :class:`PredictionLog` directly on a local lake. The last one runs
two real scoring replicas (``create_app`` under uvicorn, each its own process, on one
registered model) that score concurrently and are stopped by SIGTERM while rows are
still buffered; the lake must then hold every scored transaction exactly once.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from driftline.core.settings import Settings
from driftline.data.predictions import (
    PredictionLog,
    day_uri,
    logged_days,
    read_predictions,
    ts_micros,
)
from driftline.lifecycle import registry
from driftline.orchestration.processes import free_port
from tests.registered import KEY, register_models

DAY = date(2026, 1, 10)
NEXT = DAY + timedelta(days=1)
NAME = re.compile(
    r"^(?P<writer>[A-Za-z0-9_.-]+-\d+-\d{8}T\d{6}Z-[0-9a-f]{8})-(?P<seq>\d{6})\.parquet$"
)


def rows(prefix: str, n: int, day: date = DAY) -> list[dict[str, Any]]:
    """``n`` prediction records of ``day`` with ids ``{prefix}-{i}``."""
    start = datetime(day.year, day.month, day.day, 9, tzinfo=UTC)
    return [
        {
            "transaction_id": f"{prefix}-{i}",
            "ts": start + timedelta(seconds=i),
            "amount": 10.0 + i,
            "user_txn_count_1h": float("nan") if i % 3 == 0 else float(i),
            "score": i / (n + 1),
            "variant": "champion",
            **({"canary_error": "ValueError: bad"} if i == 1 else {}),
        }
        for i in range(n)
    ]


def files(settings: Settings, day: date = DAY, *, shadow: bool = False) -> list[str]:
    """Names of every file (hidden ones too) in ``day``'s log folder."""
    folder = Path(day_uri(settings, day, shadow=shadow))
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Wait until ``condition()`` holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture
def prediction_log(settings: Settings) -> Iterator[PredictionLog]:
    """A log that flushes only when told (bounds far away); closed after the test."""
    log = PredictionLog(settings, flush_rows=10_000, flush_seconds=3600.0)
    yield log
    log.close()


def test_each_flush_is_a_new_file_per_day_named_by_writer_and_sequence(
    settings: Settings, prediction_log: PredictionLog
) -> None:
    prediction_log.append(rows("a", 5) + rows("n", 2, NEXT))
    assert read_predictions(settings, DAY).empty  # buffered, nothing written yet
    prediction_log.flush()
    first = files(settings)
    first_bytes = (Path(day_uri(settings, DAY)) / first[0]).read_bytes()
    prediction_log.append(rows("b", 3))
    prediction_log.flush()

    names = files(settings)
    assert len(names) == 2 and files(settings, NEXT) != []
    matches = [NAME.match(name) for name in names]
    assert all(matches), names
    writers = {m["writer"] for m in matches if m}
    assert writers == {prediction_log.writer}
    assert prediction_log.writer.split("-")[1] == str(os.getpid())
    assert prediction_log.writer.startswith(re.sub(r"[^A-Za-z0-9_.-]", "_", socket.gethostname()))
    # Files are immutable: the second flush made a new file, the first is unchanged.
    assert (Path(day_uri(settings, DAY)) / first[0]).read_bytes() == first_bytes
    logged = read_predictions(settings, DAY)
    assert logged["transaction_id"].tolist() == [f"a-{i}" for i in range(5)] + [
        f"b-{i}" for i in range(3)
    ]
    assert str(logged["ts"].dt.tz) == "UTC"
    assert logged["ts"].iloc[0] == datetime(2026, 1, 10, 9, tzinfo=UTC)
    missing = [i % 3 == 0 for i in range(5)] + [i % 3 == 0 for i in range(3)]
    assert logged["user_txn_count_1h"].isna().tolist() == missing  # NaN stays NaN
    assert logged.loc[1, "canary_error"] == "ValueError: bad"  # a key only some rows have
    assert logged["canary_error"].notna().tolist() == [i == 1 for i in range(5)] + [
        False,
        True,
        False,
    ]
    assert logged_days(settings) == [DAY, NEXT]
    assert logged_days(settings, since=NEXT) == [NEXT]
    assert read_predictions(settings, NEXT)["transaction_id"].tolist() == ["n-0", "n-1"]


def columns_of(records: list[dict[str, Any]]) -> dict[str, Any]:
    """``records`` as the scorer hands them over: NumPy numbers, ``ts`` in microseconds."""
    names = dict.fromkeys(key for record in records for key in record)
    columns: dict[str, Any] = {name: [r.get(name) for r in records] for name in names}
    for name in ("amount", "user_txn_count_1h", "score"):
        columns[name] = np.asarray(columns[name], dtype=np.float64)
    columns["ts"] = ts_micros(r["ts"] for r in records)
    return columns


def test_columns_and_records_make_the_same_rows_split_by_day(
    settings: Settings, prediction_log: PredictionLog
) -> None:
    records = rows("r", 4) + rows("late", 2, NEXT)
    # One request of columns whose rows fall on two days, then records again.
    prediction_log.append_columns(columns_of(rows("c", 3) + rows("d", 2, NEXT)), 5)
    prediction_log.append(records)
    prediction_log.flush()

    day = read_predictions(settings, DAY)
    assert day["transaction_id"].tolist() == [f"c-{i}" for i in range(3)] + [
        f"r-{i}" for i in range(4)
    ]
    assert str(day["ts"].dt.tz) == "UTC"
    assert day["ts"].tolist()[:3] == [r["ts"] for r in rows("c", 3)]
    assert day["amount"].tolist() == [10.0, 11.0, 12.0, 10.0, 11.0, 12.0, 13.0]
    assert day["user_txn_count_1h"].isna().tolist() == [
        True,
        False,
        False,
        True,
        False,
        False,
        True,
    ]
    assert day["canary_error"].notna().tolist() == [False, True, False, False, True, False, False]
    assert read_predictions(settings, NEXT)["transaction_id"].tolist() == [
        "d-0",
        "d-1",
        "late-0",
        "late-1",
    ]
    assert len(files(settings)) == 1 and len(files(settings, NEXT)) == 1  # one file per day


def test_columns_of_the_wrong_length_or_time_unit_are_refused(
    prediction_log: PredictionLog,
) -> None:
    columns = columns_of(rows("c", 3))
    with pytest.raises(ValueError, match="3 values for 4 rows"):
        prediction_log.append_columns(columns, 4)
    with pytest.raises(ValueError, match="ts must be an int64 array"):
        prediction_log.append_columns({**columns, "ts": [r["ts"] for r in rows("c", 3)]}, 3)


def test_rows_are_written_by_the_background_thread_on_the_row_and_time_bounds(
    settings: Settings,
) -> None:
    by_rows = PredictionLog(settings, flush_rows=5, flush_seconds=3600.0)
    by_time = PredictionLog(settings, flush_rows=10_000, flush_seconds=0.2)
    try:
        by_rows.append(rows("r", 4))
        by_time.append(rows("t", 1, NEXT))
        time.sleep(0.5)
        assert len(read_predictions(settings, DAY)) == 0  # 4 rows < 5: still buffered
        until(lambda: len(read_predictions(settings, NEXT)) == 1)  # 0.2 s passed
        by_rows.append(rows("s", 1))  # the fifth row: the bound
        until(lambda: len(read_predictions(settings, DAY)) == 5)
        assert by_rows.files_written == 1 and by_rows.rows_written == 5
    finally:
        by_rows.close()
        by_time.close()


def test_one_row_bound_writes_before_append_returns(settings: Settings) -> None:
    log = PredictionLog(settings, flush_rows=1)
    try:
        log.append(rows("x", 3))
        assert len(read_predictions(settings, DAY)) == 3
    finally:
        log.close()


def test_a_failed_write_is_retried_under_its_name_and_lands_exactly_once(
    settings: Settings, prediction_log: PredictionLog
) -> None:
    folder = Path(day_uri(settings, DAY))
    folder.parent.mkdir(parents=True)
    folder.write_text("a file where the day's folder should be")  # writes fail here
    prediction_log.append(rows("a", 4))
    with pytest.raises(OSError):
        prediction_log.flush()
    prediction_log.append(rows("b", 2))
    with pytest.raises(OSError):
        prediction_log.flush()
    folder.unlink()
    prediction_log.flush()

    names = files(settings)
    assert names == [
        f"{prediction_log.writer}-000001.parquet",
        f"{prediction_log.writer}-000002.parquet",
    ]
    logged = read_predictions(settings, DAY)
    assert sorted(logged["transaction_id"]) == sorted([f"a-{i}" for i in range(4)] + ["b-0", "b-1"])


def test_readers_skip_files_being_written(
    settings: Settings, prediction_log: PredictionLog
) -> None:
    prediction_log.append(rows("a", 2))
    prediction_log.flush()
    folder = Path(day_uri(settings, DAY))
    # What a writer on a local lake has open before its rename: a hidden temporary name.
    (folder / f".{prediction_log.writer}-000002.parquet.tmp-0123456789ab").write_bytes(b"PAR1")
    (folder / "notes.txt").write_text("not a log file")

    assert read_predictions(settings, DAY)["transaction_id"].tolist() == ["a-0", "a-1"]


def test_the_shadow_log_is_apart_and_closed_with_its_log(settings: Settings) -> None:
    log = PredictionLog(settings, flush_rows=10_000, flush_seconds=3600.0)
    shadow = log.shadow_log()
    assert log.shadow_log() is shadow
    log.append(rows("served", 2))
    shadow.append([{**row, "shadow_score": 0.5} for row in rows("copy", 3)])
    log.close()  # closes the shadow log too: both written

    assert read_predictions(settings, DAY)["transaction_id"].tolist() == ["served-0", "served-1"]
    shadowed = read_predictions(settings, DAY, shadow=True)
    assert shadowed["transaction_id"].tolist() == ["copy-0", "copy-1", "copy-2"]
    assert logged_days(settings, shadow=True) == [DAY]
    log.append(rows("late", 1))  # after close: written at once, never dropped
    assert "late-0" in set(read_predictions(settings, DAY)["transaction_id"])


# --------------------------------------------------------------------------------------
# Two real replicas, SIGTERM
# --------------------------------------------------------------------------------------

#: One scoring replica: the real app (registry champion, prediction log in the lake)
#: under uvicorn, which turns SIGTERM into the app's lifespan shutdown. Features come
#: from a source that knows nothing (every feature missing): this test is about the log.
REPLICA = textwrap.dedent(
    """
    import sys

    import uvicorn

    from driftline.core.settings import get_settings
    from driftline.serving import create_app
    from driftline.serving.lookup import missing_row


    class NoFeatures:
        def fetch(self, entities):
            return [missing_row() for _ in entities]


    app = create_app(get_settings(), features=NoFeatures())
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def transaction(i: int, day: date) -> dict[str, Any]:
    """A valid scoring payload on ``day``."""
    return {
        "transaction_id": f"tx-{day:%m%d}-{i}",
        "ts": f"{day.isoformat()}T{10 + i % 12:02d}:{i % 60:02d}:00+00:00",
        "user_id": 1 + i % 7,
        "card_id": 1,
        "merchant_id": 1 + i % 5,
        "merchant_category": "electronics",
        "merchant_country": "DE",
        "amount": 20.0 + i,
        "currency": "EUR",
        "channel": "online",
        "device_id": "device-1",
    }


@pytest.fixture(scope="module")
def one_model(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """A registry whose version 1 is the champion."""
    cfg = register_models(tmp_path_factory.mktemp("registry"), seeds=(0,))
    registry.client(cfg).set_registered_model_alias(cfg.model_name, registry.CHAMPION, "1")
    return cfg


@pytest.mark.slow
def test_two_replicas_stopped_by_sigterm_lose_and_duplicate_no_row(
    settings: Settings, one_model: Settings, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DRIFTLINE_HOME": str(settings.home),
        "DRIFTLINE_MLFLOW_TRACKING_URI": one_model.mlflow_tracking_uri,
        "DRIFTLINE_MLFLOW_ARTIFACT_URI": one_model.mlflow_artifact_uri,
        "DRIFTLINE_PREDICTION_LOG_FLUSH_SECONDS": "600",
    }
    # Replica 0 reaches its row bound several times while serving (and holds a rest at
    # SIGTERM); replica 1 never does: all its rows are still buffered at SIGTERM.
    bounds = ["37", "100000"]
    ports = [free_port(), free_port()]
    logs = [tmp_path / f"replica-{i}.log" for i in range(2)]
    replicas = [
        subprocess.Popen(
            [sys.executable, "-c", REPLICA, str(port)],
            env={**env, "DRIFTLINE_PREDICTION_LOG_FLUSH_ROWS": bound},
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
        )
        for port, log, bound in zip(ports, logs, bounds, strict=True)
    ]
    try:
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        for url, replica, log in zip(urls, replicas, logs, strict=True):
            until(lambda url=url, replica=replica: _ready(url, replica), timeout=240.0)
            assert replica.poll() is None, log.read_text()[-3000:]

        sent = [transaction(i, day) for day in (DAY, NEXT) for i in range(150)]
        with httpx.Client(timeout=30.0) as client, ThreadPoolExecutor(8) as pool:

            def post(k: int) -> int:
                reply = client.post(f"{urls[k % 2]}/v1/score", json=sent[k], headers=KEY)
                return reply.status_code

            statuses = list(pool.map(post, range(len(sent))))
        assert statuses == [200] * len(sent)

        def in_lake() -> int:
            return sum(len(read_predictions(settings, day)) for day in (DAY, NEXT))

        until(lambda: in_lake() > 0)  # replica 0's bound flushes (its background thread)
        assert in_lake() <= len(sent) // 2  # replica 1's rows all wait in its buffer

        for replica in replicas:
            replica.send_signal(signal.SIGTERM)
        codes = [replica.wait(timeout=60) for replica in replicas]
    finally:
        for replica in replicas:
            if replica.poll() is None:
                replica.kill()
                replica.wait()
    # uvicorn shuts down gracefully (the app's lifespan), then re-raises the signal.
    assert codes == [-signal.SIGTERM] * 2, [log.read_text()[-3000:] for log in logs]
    assert not [log for log in logs if "Traceback" in log.read_text()]

    logged = [read_predictions(settings, day) for day in (DAY, NEXT)]
    ids = [tid for frame in logged for tid in frame["transaction_id"]]
    assert sorted(ids) == sorted(t["transaction_id"] for t in sent)  # each exactly once
    names = files(settings, DAY) + files(settings, NEXT)
    writers = {m["writer"] for name in names if (m := NAME.match(name))}
    assert len(writers) == 2 and len(names) == len([n for n in names if NAME.match(n)])
    assert logged_days(settings) == [DAY, NEXT]


def _ready(url: str, replica: subprocess.Popen[bytes]) -> bool:
    """Whether the replica answers ``/ready`` (a champion loaded); fails if it died."""
    assert replica.poll() is None, "replica exited"
    try:
        return httpx.get(f"{url}/ready", timeout=2.0).status_code == 200
    except httpx.HTTPError:
        return False
