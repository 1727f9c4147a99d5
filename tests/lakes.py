"""Populate an isolated lake through the real data plane (simulate, gate, features)."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from driftline.core import lake
from driftline.core.interval import Interval
from driftline.core.settings import Settings, get_settings
from driftline.data.feast import latest_per_entity, read_online
from driftline.data.features import (
    DATASET,
    FEATURES,
    MERCHANT_FEATURES,
    USER_FEATURES,
    build_features,
)
from driftline.data.ingest import ingest, publish_validated
from driftline.simulator import SimulatorConfig, write_landing

#: Feature view -> (join key, its features).
VIEWS = {
    "user_activity": ("user_id", USER_FEATURES),
    "merchant_risk": ("merchant_id", MERCHANT_FEATURES),
}


def lake_latest(settings: Settings, days: list[Interval], join_key: str) -> pd.DataFrame:
    """Each entity's newest feature row over ``days``, as the lake has it."""
    files = [
        lake.partition_file(settings.lake_uri, "features", DATASET, next(day.days()))
        for day in days
    ]
    table = pa.concat_tables([lake.read_file(f).cast(FEATURES) for f in files])
    return latest_per_entity(table, join_key).to_pandas().set_index(join_key)


def online_features(settings: Settings, join_key: str, keys: list[int]) -> pd.DataFrame:
    """The online store's values of the entities ``keys`` of ``join_key``."""
    other = "merchant_id" if join_key == "user_id" else "user_id"
    rows = [{join_key: int(k), other: 0} for k in keys]
    return pd.DataFrame(read_online(rows, settings)).set_index(join_key)


def assert_online_equals_lake(settings: Settings, days: list[Interval]) -> None:
    """Every entity's online values equal its newest feature row in the lake over ``days``."""
    for join_key, features in VIEWS.values():
        expected = lake_latest(settings, days, join_key)
        online = online_features(settings, join_key, expected.index.tolist())
        for column in features:
            np.testing.assert_allclose(
                online.loc[expected.index, column].to_numpy(dtype=float),
                expected[column].to_numpy(dtype=float),
                rtol=1e-9,
                equal_nan=True,
                err_msg=f"online {join_key} {column} differs from the lake's latest",
            )


def publish_days(settings: Settings, span: Interval, config: SimulatorConfig) -> None:
    """Land, ingest, validate and publish the raw partitions of ``span``."""
    write_landing(config, span, settings.lake_uri)
    for dataset in ("transactions", "labels"):
        ingest(dataset, span, settings)
        publish_validated(dataset, span, settings)


def populate_lake(settings: Settings, span: Interval, config: SimulatorConfig) -> None:
    """:func:`publish_days`, then features from the second day (the first is history)."""
    publish_days(settings, span, config)
    build_features(Interval(span.start + timedelta(days=1), span.end), settings)


class LakeTemplates:
    """Lakes populated once per test session (per xdist worker), copied into each test.

    :func:`populate_lake` costs seconds of simulation, validation and Spark; a test that
    only reads the lake, or changes its own copy (Feast materializes into the state
    folder), gets the same bytes from a copy of a lake built once with the same span and
    simulator config. The state folder holds no absolute paths, so a copy is a lake.
    """

    def __init__(self, root: Path) -> None:
        """Templates live under ``root`` (a session temporary folder)."""
        self.root = root
        self.built: dict[str, Path] = {}

    def state(self, span: Interval, config: SimulatorConfig) -> Path:
        """The state folder of the template lake of ``span`` and ``config``."""
        key = f"{span!r}/{config!r}"
        if key not in self.built:
            state = self.root / f"lake-{len(self.built)}" / "state"
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("DRIFTLINE_HOME", str(state))
                get_settings.cache_clear()
                try:
                    populate_lake(get_settings(), span, config)
                finally:
                    get_settings.cache_clear()
            self.built[key] = state
        return self.built[key]

    def copy(self, settings: Settings, span: Interval, config: SimulatorConfig) -> Settings:
        """Fill the (empty) state folder of ``settings`` with a copy of the template lake."""
        shutil.copytree(self.state(span, config), settings.home, dirs_exist_ok=True)
        return settings


def lake_snapshot(state: Path) -> dict[str, str]:
    """SHA-256 of every raw and feature partition file under ``state``'s lake."""
    return {
        str(p.relative_to(state)): hashlib.sha256(p.read_bytes()).hexdigest()
        for zone in ("raw", "features")
        for p in sorted((state / "lake" / zone).rglob("*.parquet"))
    }


def online_snapshot(state: Path) -> list[tuple[object, ...]]:
    """Every row of the SQLite online store under ``state``, sorted."""
    with sqlite3.connect(state / "feast" / "online.db") as db:
        tables = [r[0] for r in db.execute("select name from sqlite_master where type='table'")]
        return sorted(row for t in tables for row in db.execute(f'select * from "{t}"'))
