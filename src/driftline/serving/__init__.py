"""The scoring service (``driftline serve``): FastAPI over the champion and canary.

Build it with :func:`create_app`; read a day of the prediction log back with
:func:`read_predictions`.
"""

from __future__ import annotations

from driftline.data.predictions import read_predictions
from driftline.serving.app import create_app
from driftline.serving.lookup import (
    CircuitBreaker,
    FeastFeatureSource,
    FeatureSource,
    GuardedFeatures,
)
from driftline.serving.models import LoadedModel, ModelProvider, ModelSet
from driftline.serving.routing import bucket, choose_variant

__all__ = [
    "CircuitBreaker",
    "FeastFeatureSource",
    "FeatureSource",
    "GuardedFeatures",
    "LoadedModel",
    "ModelProvider",
    "ModelSet",
    "bucket",
    "choose_variant",
    "create_app",
    "read_predictions",
]
