"""Run the training pipeline: on the KFP local runner, or on a Kubeflow cluster.

With ``settings.kfp_host`` empty the pipeline runs in-process through ``kfp.local``
(each component in a subprocess of this interpreter, sharing the ``DRIFTLINE_*``
environment). With a host set, the *same* pipeline is submitted with ``kfp.Client``,
awaited, and its outcome read back from the MLflow registry by the request id.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.lifecycle import registry
from driftline.training.steps import default_request_id

log = logging.getLogger(__name__)

#: Longest wait for a cluster run, in seconds.
CLUSTER_TIMEOUT_S = 6 * 3600


class PipelineFailedError(RuntimeError):
    """The training pipeline did not finish successfully."""


@dataclass(frozen=True)
class TrainRequest:
    """What to train on and how hard to search."""

    window: Interval
    trials: int
    workers: int
    request_id: str = ""
    airflow_run_id: str = ""

    def arguments(self) -> dict[str, Any]:
        """The pipeline's run arguments."""
        return {
            "window_start": self.window.start.date().isoformat(),
            "window_end": self.window.end.date().isoformat(),
            "request_id": self.request_id or default_request_id(self.window),
            "worker_ids": list(range(self.workers)),
            "trials_per_worker": math.ceil(self.trials / self.workers),
            "airflow_run_id": self.airflow_run_id,
        }


def request_from_settings(
    window: Interval,
    settings: Settings,
    *,
    trials: int | None = None,
    workers: int | None = None,
    request_id: str = "",
    airflow_run_id: str = "",
) -> TrainRequest:
    """A request with the tuning budget from settings unless given."""
    return TrainRequest(
        window=window,
        trials=trials or settings.tuning_trials,
        workers=workers or settings.tuning_workers,
        request_id=request_id,
        airflow_run_id=airflow_run_id,
    )


def run_pipeline(
    pipeline: Callable[..., Any], request: TrainRequest, settings: Settings
) -> dict[str, Any]:
    """Run ``pipeline`` for ``request``; return the register step's outcome.

    Raises:
        PipelineFailedError: A step failed (its log is in the output above) or the
            cluster run ended in another state than SUCCEEDED.
    """
    arguments = request.arguments()
    if settings.kfp_host:
        return _run_on_cluster(pipeline, arguments, settings)
    return _run_locally(pipeline, arguments, settings)


def _run_locally(
    pipeline: Callable[..., Any], arguments: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    from kfp import local

    root = settings.training_dir / "kfp"
    root.mkdir(parents=True, exist_ok=True)
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(root))
    log.info("running the training pipeline locally: %s", arguments)
    try:
        task = pipeline(**arguments)
    except RuntimeError as error:  # kfp.local reports a failed step as RuntimeError
        raise PipelineFailedError(_plain(str(error))) from error
    outcome: dict[str, Any] = json.loads(task.output)
    return outcome


def _plain(message: str) -> str:
    """Drop the ANSI colour codes kfp.local puts into its messages."""
    import re

    return re.sub(r"\x1b\[[0-9;]*m", "", message)


def _run_on_cluster(
    pipeline: Callable[..., Any], arguments: dict[str, Any], settings: Settings
) -> dict[str, Any]:
    import kfp

    client = kfp.Client(host=settings.kfp_host)
    run = client.create_run_from_pipeline_func(
        pipeline,
        arguments=arguments,
        experiment_name=settings.mlflow_experiment,
        enable_caching=False,
    )
    log.info("submitted KFP run %s to %s", run.run_id, settings.kfp_host)
    detail = run.wait_for_run_completion(timeout=CLUSTER_TIMEOUT_S)
    state = str(getattr(detail, "state", "")).upper()
    if state != "SUCCEEDED":
        raise PipelineFailedError(f"KFP run {run.run_id} ended {state or 'in an unknown state'}")
    return outcome_from_registry(settings, arguments["request_id"])


def outcome_from_registry(settings: Settings, request_id: str) -> dict[str, Any]:
    """The version registered for ``request_id``, as the register step reports it."""
    version = registry.find_version(settings, request_id)
    if version is None:
        raise PipelineFailedError(f"no model version was registered for request {request_id}")
    return registry.describe_version(settings, version)
