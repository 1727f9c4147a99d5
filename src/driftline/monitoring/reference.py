"""The drift reference of a registered version: what its model was trained on, scored.

The training pipeline's register step logs the newest ``drift_reference_days`` labelled
days of the training set (all splits, with a ``split`` column) with the model's own
scores into the version's MLflow run and records its ``runs:/`` URI in the version tag
``drift_reference``. Monitoring fetches it once per version and keeps a copy in the
lake, ``{lake}/monitoring/reference/v<version>.parquet``, that every later run (on any
machine) reads.
"""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path

import pandas as pd

from driftline.core.atomic import filesystem, put_atomic
from driftline.core.settings import Settings
from driftline.lifecycle import registry
from driftline.monitoring.files import monitoring_uri
from driftline.training.steps import DRIFT_REFERENCE_TAG

log = logging.getLogger(__name__)


class ReferenceMissingError(RuntimeError):
    """The version carries no drift reference (registered outside the pipeline)."""


def reference_path(settings: Settings, version: str) -> str:
    """URI of the lake's copy of ``version``'s drift reference."""
    return monitoring_uri(settings, "reference", f"v{version}.parquet")


def load_reference(settings: Settings, version: str) -> pd.DataFrame:
    """The drift reference of ``version`` (model inputs, ``label`` and ``score``).

    Raises:
        ReferenceMissingError: The version has no ``drift_reference`` tag.
    """
    uri = reference_path(settings, version)
    fs, path = filesystem(uri)
    if not fs.exists(path):
        put_atomic(uri, _download(settings, version))
    return pd.read_parquet(io.BytesIO(fs.cat_file(path)))


def _download(settings: Settings, version: str) -> bytes:
    """The Parquet bytes of ``version``'s drift reference, fetched from MLflow."""
    import mlflow.artifacts

    details = registry.client(settings).get_model_version(settings.model_name, version)
    uri = (details.tags or {}).get(DRIFT_REFERENCE_TAG)
    if not uri:
        raise ReferenceMissingError(
            f"version {version} of {settings.model_name} has no {DRIFT_REFERENCE_TAG!r} tag; "
            "register models through the training pipeline to get a drift reference"
        )
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=uri, dst_path=tmp, tracking_uri=settings.mlflow_tracking_uri
        )
        payload = Path(local).read_bytes()
    log.info("drift reference of version %s fetched from %s", version, uri)
    return payload
