"""Components of the training pipeline (see ``pipelines/train_pipeline.py``).

Lightweight KFP components: the function bodies run in the training image (or, on
the KFP local runner, in this interpreter) and hand everything to
:mod:`driftline.training.steps`. Imports live inside the bodies because KFP ships
each body on its own. Settings come from the ``DRIFTLINE_*`` environment.
"""

import functools
from typing import NamedTuple

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Metrics, Model, Output

from driftline.core.images import training_image

component = functools.partial(dsl.component, base_image=training_image(), install_kfp_package=False)


@component
def prepare_training(
    window_start: str,
    window_end: str,
    request_id: str,
    kfp_run_id: str,
    airflow_run_id: str,
    training_set: Output[Dataset],
) -> NamedTuple("PrepareOutputs", [("run_id", str), ("study_name", str)]):
    """Build the point-in-time training set and open the request's MLflow run."""
    from collections import namedtuple
    from pathlib import Path

    from driftline.core.interval import Interval
    from driftline.core.settings import get_settings
    from driftline.training import steps

    out = steps.prepare(
        Interval.parse(window_start, window_end),
        Path(training_set.path),
        get_settings(),
        request_id=request_id,
        kfp_run_id=kfp_run_id,
        airflow_run_id=airflow_run_id,
    )
    outputs = namedtuple("PrepareOutputs", ["run_id", "study_name"])
    return outputs(out["run_id"], out["study_name"])


@component
def tune_worker(
    training_set: Input[Dataset],
    request_id: str,
    trials: int,
    worker: int,
) -> str:
    """One Optuna worker running ``trials`` trials on the shared study; summary as JSON."""
    import json
    from pathlib import Path

    from driftline.core.settings import get_settings
    from driftline.training import steps

    summary = steps.tune(
        Path(training_set.path),
        get_settings(),
        request_id=request_id,
        trials=trials,
        worker=int(worker),
    )
    return json.dumps(summary, default=str)


@component
def train_best(
    training_set: Input[Dataset],
    study_name: str,
    run_id: str,
    tuning: list,  # the workers' summaries (fan-in)
    model: Output[Model],
) -> str:
    """Train the study's best configuration fully (resumes from its checkpoints)."""
    import json
    from pathlib import Path

    from driftline.core.settings import get_settings
    from driftline.training import steps

    trained = steps.train_best(
        Path(training_set.path), Path(model.path), get_settings(), study=study_name, run_id=run_id
    )
    return json.dumps(trained, default=str)


@component
def evaluate_candidate(
    training_set: Input[Dataset],
    model: Input[Model],
    run_id: str,
    report: Output[Artifact],
    metrics: Output[Metrics],
) -> str:
    """Score candidate and champion on the recent holdout; PR curve and calibration."""
    import json
    from pathlib import Path

    from driftline.core.settings import get_settings
    from driftline.training import steps

    result = steps.evaluate(
        Path(training_set.path), Path(model.path), Path(report.path), get_settings(), run_id=run_id
    )
    for key, value in result["candidate"].items():
        metrics.log_metric(key, float(value))
    return json.dumps(result, default=str)


@component
def register_candidate(
    training_set: Input[Dataset],
    model: Input[Model],
    evaluation: str,
    trained: str,
    run_id: str,
    request_id: str,
    kfp_run_id: str,
    airflow_run_id: str,
) -> str:
    """Register in MLflow with lineage; alias ``staging`` only when the gates pass."""
    import json
    from pathlib import Path

    from driftline.core.settings import get_settings
    from driftline.training import steps

    outcome = steps.register(
        Path(training_set.path),
        Path(model.path),
        json.loads(evaluation),
        json.loads(trained),
        get_settings(),
        run_id=run_id,
        request_id=request_id,
        kfp_run_id=kfp_run_id,
        airflow_run_id=airflow_run_id,
    )
    return json.dumps(outcome, default=str)
