"""Populate an isolated lake through the real data plane (simulate, gate, features)."""

from __future__ import annotations

from datetime import timedelta

from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.data.features import build_features
from driftline.data.ingest import ingest, publish_validated
from driftline.simulator import SimulatorConfig, write_landing


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
