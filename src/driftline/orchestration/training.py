"""The one entry point that trains a model: ``train-pipeline`` for one window.

``driftline train``, the ``train_register`` and ``retrain_promote`` DAGs and the tests
all call :func:`run_training`. The pipeline itself is KFP wiring in ``pipelines/``
(installed as ``driftline_pipelines``); it is imported only when a run starts.
"""

from __future__ import annotations

from typing import Any

from driftline.core.interval import Interval
from driftline.core.settings import get_settings
from driftline.orchestration.runner import request_from_settings, run_pipeline


def run_training(
    window_start: str,
    window_end: str,
    *,
    trials: int | None = None,
    workers: int | None = None,
    request_id: str = "",
    airflow_run_id: str = "",
) -> dict[str, Any]:
    """Run ``train-pipeline`` for one window with the settings; return the outcome.

    The GPU variant when ``DRIFTLINE_TRAIN_USE_GPU`` is set, the local runner or the
    cluster in ``DRIFTLINE_KFP_HOST``, the tuning budget from the settings unless given.
    """
    from driftline_pipelines.train_pipeline import build_train_pipeline

    settings = get_settings()
    request = request_from_settings(
        Interval.parse(window_start, window_end),
        settings,
        trials=trials,
        workers=workers,
        request_id=request_id,
        airflow_run_id=airflow_run_id,
    )
    return run_pipeline(build_train_pipeline(settings.train_use_gpu), request, settings)
