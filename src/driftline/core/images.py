"""Container images that run driftline on a cluster.

Two images are built from ``docker/``: the *platform* image (driftline, Airflow with
the DAGs, MLflow, Feast, Spark, the scoring service) and the *training* image
(driftline with CUDA-enabled torch, for the Kubeflow training and tuning components).
Kubeflow components read the image to run in from here, so the pipeline definition and
the deployment agree on one name. Terraform writes the ECR URIs of both images into
``driftline.env`` as ``DRIFTLINE_PLATFORM_IMAGE`` and ``DRIFTLINE_TRAINING_IMAGE``.

Nothing is read at import time: call :func:`platform_image` / :func:`training_image`
when the image is needed (for example when a pipeline is compiled).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

#: Local name of the platform image (``docker build -f docker/platform.Dockerfile``).
PLATFORM_IMAGE = "driftline-platform:0.1.0"
#: Local name of the training image (``docker build -f docker/training.Dockerfile``).
TRAINING_IMAGE = "driftline-training:0.1.0"

PLATFORM_IMAGE_ENV = "DRIFTLINE_PLATFORM_IMAGE"
TRAINING_IMAGE_ENV = "DRIFTLINE_TRAINING_IMAGE"


def _resolve(variable: str, default: str, environ: Mapping[str, str] | None) -> str:
    """Return ``environ[variable]`` when set and not blank, else ``default``."""
    env = os.environ if environ is None else environ
    value = env.get(variable, "").strip()
    return value or default


def platform_image(environ: Mapping[str, str] | None = None) -> str:
    """Image reference of the platform image.

    Args:
        environ: Environment to read; the process environment when omitted.

    Returns:
        ``DRIFTLINE_PLATFORM_IMAGE`` when set (e.g. an ECR URI with a tag), else
        :data:`PLATFORM_IMAGE`.
    """
    return _resolve(PLATFORM_IMAGE_ENV, PLATFORM_IMAGE, environ)


def training_image(environ: Mapping[str, str] | None = None) -> str:
    """Image reference of the training image.

    Args:
        environ: Environment to read; the process environment when omitted.

    Returns:
        ``DRIFTLINE_TRAINING_IMAGE`` when set (e.g. an ECR URI with a tag), else
        :data:`TRAINING_IMAGE`.
    """
    return _resolve(TRAINING_IMAGE_ENV, TRAINING_IMAGE, environ)
