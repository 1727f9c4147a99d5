"""Feast integration: build the store from settings, apply definitions, materialize.

The Feast repository (``feature_repo/``) only declares, from
:mod:`driftline.core.feature_spec`, and works on its own with the ``feast`` CLI. This
module:

* builds a :class:`feast.FeatureStore` from the environment's ``feature_store.yaml``
  (``feature_repo/feature_store.yaml`` for ``local``,
  ``feature_repo/environments/<feast_env>/feature_store.yaml`` otherwise), filling its
  ``${DRIFTLINE_*}`` placeholders from settings and putting the registry and the SQLite
  online store where the settings say;
* applies the declared objects, pointing the file source at the settings' lake;
* materializes exactly one data interval into the online store.

Materialization guard: Feast's SQLite store (the embedded default) writes last-wins,
and its Redis store skips equal event times (driftline turns that check off, so both
write what they are given). So before writing we read each entity's stored event time.
A value from *after* the interval is newer and stays: a backfill of an older day never
overwrites newer values. Anything else is replaced by the interval's latest row, in
particular a value with the same event time: rerunning a day rewrites that day's own
values, which repairs an online store holding wrong ones. (The interval's rows all lie
inside it, so this is "newer or equal replaces, older never overwrites"; it also
repairs a day whose corrected data no longer has the row that was last online.) The
SQLite store keeps whole seconds, and interval edges are whole seconds, so comparing
the stored time with the interval's end is exact.
"""

from __future__ import annotations

import logging
import os
import runpy
import string
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from driftline.core import feature_spec, lake
from driftline.core.interval import Interval
from driftline.core.settings import Settings, get_settings
from driftline.data.features import DATASET, FEATURES

if TYPE_CHECKING:
    from feast import FeatureStore, FeatureView

log = logging.getLogger(__name__)

#: The feature service driftline trains and serves with (declared in the feature spec).
FEATURE_SERVICE = feature_spec.FEATURE_SERVICE
DEFINITIONS_FILE = "features.py"
#: The environment whose ``feature_store.yaml`` sits at the repository root (Feast's
#: default location, what a plain ``feast apply`` in ``feature_repo/`` uses).
LOCAL_ENV = "local"


def feature_source_uri(settings: Settings) -> str:
    """The folder of the feature table that the Feast file source reads."""
    return f"{settings.lake_uri}/features/{DATASET}"


def _placeholders(settings: Settings) -> dict[str, str]:
    """Values for the ``${DRIFTLINE_*}`` placeholders of ``feature_store.yaml``."""
    return {
        "DRIFTLINE_FEAST_REGISTRY": settings.feast_registry,
        "DRIFTLINE_FEAST_ONLINE_PATH": settings.feast_online_path,
        "DRIFTLINE_REDIS_URL": settings.redis_url,
        "DRIFTLINE_SPARK_MASTER": settings.spark_master,
        "DRIFTLINE_LAKE_URI": settings.lake_uri,
    }


def store_yaml_path(settings: Settings) -> str:
    """Path of the environment's ``feature_store.yaml``."""
    if settings.feast_env == LOCAL_ENV:
        return str(settings.feature_repo / "feature_store.yaml")
    return str(settings.feature_repo / "environments" / settings.feast_env / "feature_store.yaml")


def _with_settings_stores(raw: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``raw`` with the registry and a SQLite online store at the settings' locations.

    The committed local yaml names the Feast CLI's own files (``feature_repo/data/``);
    driftline always uses its state folder (or the URIs it was configured with).
    """
    registry = raw.get("registry")
    if isinstance(registry, dict):
        raw["registry"] = {**registry, "path": settings.feast_registry}
    else:
        raw["registry"] = settings.feast_registry
    online = raw.get("online_store") or {}
    if online.get("type") == "sqlite":
        raw["online_store"] = {**online, "path": settings.feast_online_path}
    elif online.get("type") == "redis":
        # Feast's Redis store skips a row whose event time equals the stored one, which
        # would stop a rerun from repairing its day; materialize_interval's guard decides
        # what may be written, on every store alike (the Feast CLI keeps Feast's check).
        raw["online_store"] = {**online, "skip_dedup": True}
    return raw


def get_store(settings: Settings | None = None) -> FeatureStore:
    """Build the feature store for the configured environment.

    Raises:
        FileNotFoundError: No ``feature_store.yaml`` exists for ``feast_env``.
    """
    import yaml
    from feast import FeatureStore, RepoConfig

    cfg = settings or get_settings()
    with open(store_yaml_path(cfg), encoding="utf-8") as handle:
        text = string.Template(handle.read()).substitute({**os.environ, **_placeholders(cfg)})
    raw = _with_settings_stores(yaml.safe_load(text), cfg)
    if raw["online_store"].get("type") == "sqlite":
        os.makedirs(os.path.dirname(cfg.feast_online_path), exist_ok=True)
    if "://" not in cfg.feast_registry:
        os.makedirs(os.path.dirname(cfg.feast_registry), exist_ok=True)
    config = RepoConfig(**raw)
    config.repo_path = cfg.feature_repo
    return FeatureStore(config=config)


def load_definitions(settings: Settings) -> list[Any]:
    """Load the Feast objects declared in ``feature_repo/``, sourced from our lake."""
    from feast import Entity, FeatureService, FeatureView, FileSource

    namespace = runpy.run_path(str(settings.feature_repo / DEFINITIONS_FILE))
    kinds = (Entity, FeatureView, FeatureService, FileSource)
    objects = [value for value in namespace.values() if isinstance(value, kinds)]
    sources = [obj for obj in objects if isinstance(obj, FileSource)]
    sources += [
        obj.batch_source
        for obj in objects
        if isinstance(obj, FeatureView) and isinstance(obj.batch_source, FileSource)
    ]
    for source in sources:
        source.file_options.uri = feature_source_uri(settings)
        # Feast's file offline store opens an s3:// source with pyarrow's and dask's S3
        # filesystems, which take a custom endpoint (the moto server, MinIO) from here.
        source.file_options.s3_endpoint_override = offline_s3_endpoint(settings)
    return objects


def offline_s3_endpoint(settings: Settings) -> str:
    """The S3 endpoint of the offline source: the AWS variables' for an ``s3://`` lake.

    ``""`` (Feast's "none") for any other lake, or where no custom endpoint is set.
    """
    if not settings.lake_uri.startswith("s3://"):
        return ""
    return lake.s3_endpoint() or ""


def apply_definitions(settings: Settings | None = None) -> FeatureStore:
    """``feast apply`` the repository's definitions (idempotent) and return the store."""
    cfg = settings or get_settings()
    store = get_store(cfg)
    store.apply(load_definitions(cfg))
    return store


@dataclass(frozen=True)
class MaterializeResult:
    """What one materialization wrote, per feature view."""

    interval: str
    written: dict[str, int]
    skipped_older: dict[str, int]
    #: Of the rows written, those that replaced a stored value of this interval (a rerun).
    replaced: dict[str, int] = field(default_factory=dict)


def _entity_key(join_key: str, value: int) -> Any:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[join_key], entity_values=[Value(int64_val=int(value))])


def stored_event_times(
    store: FeatureStore, view: FeatureView, join_key: str, keys: list[int]
) -> dict[int, datetime]:
    """Event time currently stored online for each entity key that has one."""
    provider = store._get_provider()  # Feast's documented extension point for stores
    rows = provider.online_read(store.config, view, [_entity_key(join_key, k) for k in keys])
    return {key: ts for key, (ts, _) in zip(keys, rows, strict=True) if ts is not None}


def latest_per_entity(table: pa.Table, join_key: str) -> pa.Table:
    """The newest row of each entity (ties broken by transaction id)."""
    order = [("event_timestamp", "descending"), ("transaction_id", "descending")]
    ordered = table.take(pc.sort_indices(table, sort_keys=order))
    keys = ordered[join_key].to_numpy()
    _, first = np.unique(keys, return_index=True)
    return ordered.take(pa.array(sorted(first)))


def _not_older_than_stored(
    store: FeatureStore, view: FeatureView, latest: pd.DataFrame, join_key: str, interval: Interval
) -> tuple[pd.DataFrame, int]:
    """The rows of ``latest`` to write, and how many replace a value of ``interval``."""
    stored = stored_event_times(store, view, join_key, latest[join_key].tolist())
    if not stored:
        return latest, 0
    # The SQLite store keeps whole seconds; the interval's end is a whole second, so
    # "stored before the end" is exact at that precision.
    previous = pd.to_datetime(latest[join_key].map(stored), utc=True).dt.floor("s")
    end = pd.Timestamp(interval.end)
    keep = previous.isna() | (previous < end)
    same_interval = previous.notna() & (previous >= pd.Timestamp(interval.start))
    return latest[keep.to_numpy()], int((keep & same_interval).sum())


def materialize_interval(interval: Interval, settings: Settings | None = None) -> MaterializeResult:
    """Load the interval's feature rows into the online store, never going back in time.

    Each entity's latest row of the interval replaces its stored value unless that
    value is from after the interval (see the module docstring): a rerun repairs, an
    older interval never overwrites a newer one.

    Args:
        interval: Exactly the rows with ``event_timestamp`` in ``[start, end)`` are used.
        settings: Settings; defaults to :func:`get_settings`.

    Returns:
        Rows written (of which replaced: a stored value of this interval) and rows
        skipped (a newer value is online) per feature view.

    Raises:
        FileNotFoundError: A feature partition of the interval does not exist.
    """
    cfg = settings or get_settings()
    files = lake.existing_partition_files(cfg.lake_uri, "features", DATASET, interval.days())
    if len(files) != len(list(interval.days())):
        raise FileNotFoundError(f"feature partitions missing for {interval}; run features first")
    table = pa.concat_tables([lake.read_file(f).cast(FEATURES) for f in files])
    store = apply_definitions(cfg)
    written: dict[str, int] = {}
    skipped: dict[str, int] = {}
    replaced: dict[str, int] = {}
    for view in store.get_feature_service(FEATURE_SERVICE).feature_view_projections:
        fv = store.get_feature_view(view.name)
        join_key = fv.entity_columns[0].name
        columns = [join_key, "event_timestamp", *[f.name for f in fv.features]]
        latest = latest_per_entity(table, join_key).select(columns).to_pandas()
        fresh, replaced[fv.name] = _not_older_than_stored(store, fv, latest, join_key, interval)
        if len(fresh):
            store.write_to_online_store(fv.name, fresh)
        store.registry.apply_materialization(fv, store.project, interval.start, interval.end)
        written[fv.name], skipped[fv.name] = len(fresh), len(latest) - len(fresh)
        log.info(
            "materialized %s %s: %d written (%d replacing this interval's), %d older skipped",
            fv.name,
            interval,
            len(fresh),
            replaced[fv.name],
            len(latest) - len(fresh),
        )
    return MaterializeResult(str(interval), written, skipped, replaced)


def read_online(
    entity_rows: list[dict[str, int]], settings: Settings | None = None
) -> dict[str, list[Any]]:
    """Online features of the ``fraud_v1`` service for the given entity rows."""
    store = get_store(settings)
    service = store.get_feature_service(FEATURE_SERVICE)
    return store.get_online_features(features=service, entity_rows=entity_rows).to_dict()
