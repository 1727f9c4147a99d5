"""feature_repo/ as a plain Feast repository: the real ``feast`` CLI, no driftline settings.

A copy of the repository sits next to a tiny lake at its default location
(``../.driftline/lake``); ``feast apply``, ``feast materialize`` and ``feast
materialize-incremental`` run in it exactly as a Feast user would type them, and the
online values are read back with ``FeatureStore(repo_path=...)``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from driftline.core.feature_spec import (
    FEATURE_SERVICE,
    FEATURE_SPEC,
    FEATURE_TABLE,
    JOIN_KEYS,
    MERCHANT_FEATURES,
    USER_FEATURES,
)
from driftline.data.features import FEATURES
from tests.conftest import REPO

pytestmark = pytest.mark.slow

FEAST = Path(sys.executable).with_name("feast")
DAY1, DAY2 = date(2026, 1, 5), date(2026, 1, 6)
#: (user, merchant, hour of the day) of each row, per day.
ROWS: dict[date, list[tuple[int, int, int]]] = {
    DAY1: [(1, 10, 9), (2, 10, 11), (1, 20, 14), (3, 30, 16)],
    DAY2: [(2, 20, 8), (1, 10, 12)],
}


def _partition(day: date, first_value: int) -> pa.Table:
    """Feature rows of ``day`` whose every feature is a distinct, recognisable number."""
    rows = ROWS[day]
    start = datetime(day.year, day.month, day.day, tzinfo=UTC)
    columns: dict[str, list[Any]] = {
        "transaction_id": [f"tx-{day:%d}-{i}" for i in range(len(rows))],
        "user_id": [user for user, _, _ in rows],
        "merchant_id": [merchant for _, merchant, _ in rows],
        "event_timestamp": [start + timedelta(hours=hour) for _, _, hour in rows],
        "amount": [12.5] * len(rows),
    }
    for offset, feature in enumerate(FEATURE_SPEC):
        values = [first_value + 100 * offset + i for i in range(len(rows))]
        columns[feature.name] = [v + 0.25 if feature.dtype == "float64" else v for v in values]
    return pa.Table.from_pydict(columns, schema=FEATURES)


def _latest(
    tables: list[pa.Table], join_key: str, names: tuple[str, ...]
) -> dict[int, dict[str, Any]]:
    """The newest row's ``names`` per entity, as Feast should serve them."""
    latest: dict[int, tuple[datetime, dict[str, Any]]] = {}
    for row in pa.concat_tables(tables).to_pylist():
        key, ts = row[join_key], row["event_timestamp"]
        if key not in latest or ts > latest[key][0]:
            latest[key] = (ts, {name: row[name] for name in names})
    return {key: values for key, (_, values) in latest.items()}


def _feast(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DRIFTLINE_", "FEAST_"))}
    env["FEAST_USAGE"] = "False"
    done = subprocess.run(
        [str(FEAST), *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, f"feast {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _online(repo: Path, users: list[int], merchants: list[int]) -> dict[str, list[Any]]:
    from feast import FeatureStore

    store = FeatureStore(repo_path=str(repo))
    rows = [{"user_id": u, "merchant_id": m} for u, m in zip(users, merchants, strict=True)]
    service = store.get_feature_service(FEATURE_SERVICE)
    return store.get_online_features(features=service, entity_rows=rows).to_dict()


def _assert_online(
    repo: Path, users: dict[int, dict[str, Any]], merchants: dict[int, dict[str, Any]]
) -> None:
    user_keys, merchant_keys = sorted(users), sorted(merchants)
    n = max(len(user_keys), len(merchant_keys))
    padded_users = user_keys + [user_keys[0]] * (n - len(user_keys))
    padded_merchants = merchant_keys + [merchant_keys[0]] * (n - len(merchant_keys))
    online = _online(repo, padded_users, padded_merchants)
    for i, (user, merchant) in enumerate(zip(padded_users, padded_merchants, strict=True)):
        for name in USER_FEATURES:
            assert online[name][i] == pytest.approx(users[user][name]), (user, name)
        for name in MERCHANT_FEATURES:
            assert online[name][i] == pytest.approx(merchants[merchant][name]), (merchant, name)


def test_feast_cli_applies_and_materializes_the_repository(tmp_path: Path) -> None:
    repo = tmp_path / "feature_repo"
    shutil.copytree(REPO / "feature_repo", repo, ignore=shutil.ignore_patterns("data"))
    table_dir = tmp_path / ".driftline" / "lake" / "features" / FEATURE_TABLE  # the default
    parts = {DAY1: _partition(DAY1, 1), DAY2: _partition(DAY2, 50)}
    for day, table in parts.items():
        (table_dir / f"dt={day}").mkdir(parents=True)
        pq.write_table(table, table_dir / f"dt={day}" / "part-0.parquet")

    applied = _feast(repo, "apply")
    assert "user_activity" in applied and "merchant_risk" in applied
    assert (repo / "data" / "registry.db").is_file()

    _feast(repo, "materialize", f"{DAY1}T00:00:00", f"{DAY2}T00:00:00")
    user_key, merchant_key = JOIN_KEYS["user"], JOIN_KEYS["merchant"]
    _assert_online(
        repo,
        _latest([parts[DAY1]], user_key, USER_FEATURES),
        _latest([parts[DAY1]], merchant_key, MERCHANT_FEATURES),
    )

    # Picks up where the last materialization ended (DAY2 00:00), per feature view.
    _feast(repo, "materialize-incremental", f"{DAY2 + timedelta(days=1)}T00:00:00")
    both = [parts[DAY1], parts[DAY2]]
    _assert_online(
        repo,
        _latest(both, user_key, USER_FEATURES),
        _latest(both, merchant_key, MERCHANT_FEATURES),
    )
