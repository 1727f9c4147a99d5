"""The Kubeflow training pipeline ``train-pipeline`` (wiring only).

prepare (training set + MLflow run) -> N tuning workers on one Optuna study
(``ParallelFor``) -> train the best configuration (one GPU when requested) ->
evaluate against the champion -> register (alias ``staging`` when the gates pass).

``train_pipeline`` is the CPU pipeline; ``build_train_pipeline(use_gpu=True)`` asks for
an NVIDIA GPU on the train step (and tolerates the GPU nodes' taint). On a cluster every
task gets the ``DRIFTLINE_*`` settings from the ConfigMap and the database password from
the Secret named in :mod:`driftline.core.cluster`; the KFP local runner ignores these
Kubernetes settings and the GPU request (its steps inherit this process's environment).
Both are compiled into YAML next to this file
(``python -m driftline_pipelines.train_pipeline``); a test fails when the YAML is stale.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

from driftline_components.training import (
    evaluate_candidate,
    prepare_training,
    register_candidate,
    train_best,
    tune_worker,
)
from kfp import compiler, dsl, kubernetes

from driftline.core.cluster import (
    DB_PASSWORD_KEY,
    DB_SECRET,
    GPU_RESOURCE,
    OPTIONAL_SETTINGS_KEYS,
    SETTINGS_CONFIG_MAP,
    SETTINGS_KEYS,
)

PIPELINE_NAME = "train-pipeline"
HERE = Path(__file__).resolve().parent
#: Compiled pipeline files, keyed by whether the train step requests a GPU.
COMPILED = {False: HERE / "train_pipeline.yaml", True: HERE / "train_pipeline_gpu.yaml"}


def with_cluster_settings(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Give ``task`` the settings ConfigMap and the database Secret as environment."""
    kubernetes.use_config_map_as_env(task, SETTINGS_CONFIG_MAP, {key: key for key in SETTINGS_KEYS})
    kubernetes.use_config_map_as_env(
        task, SETTINGS_CONFIG_MAP, {key: key for key in OPTIONAL_SETTINGS_KEYS}, optional=True
    )
    kubernetes.use_secret_as_env(task, DB_SECRET, {DB_PASSWORD_KEY: DB_PASSWORD_KEY})
    return task


def request_gpu(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """One NVIDIA GPU for ``task``, tolerating the taint that keeps others off GPU nodes."""
    task.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1)
    kubernetes.add_toleration(task, key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")
    return task


def build_train_pipeline(use_gpu: bool = False) -> Callable[..., Any]:
    """The pipeline function; ``use_gpu`` adds an NVIDIA GPU request to the train step."""

    @dsl.pipeline(name=PIPELINE_NAME, description="Tune, train, evaluate and register.")
    def train_pipeline(
        window_start: str,
        window_end: str,
        request_id: str,
        worker_ids: list = [0, 1],  # noqa: B006  # one tuning worker per id (KFP default)
        trials_per_worker: int = 4,
        airflow_run_id: str = "",
    ) -> str:
        # kfp.local fans out only over pipeline inputs, so the worker ids are an input.
        prepare = prepare_training(
            window_start=window_start,
            window_end=window_end,
            request_id=request_id,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            airflow_run_id=airflow_run_id,
        ).set_caching_options(False)
        with_cluster_settings(prepare)
        training_set = prepare.outputs["training_set"]
        with dsl.ParallelFor(worker_ids) as worker:
            # Only pipeline inputs (not task outputs) go in: kfp.local's ParallelFor
            # substitutes the loop item for task-output parameters inside the loop.
            tune = tune_worker(
                training_set=training_set,
                request_id=request_id,
                trials=trials_per_worker,
                worker=worker,
            ).set_caching_options(False)
            with_cluster_settings(tune)
        train = train_best(
            training_set=training_set,
            study_name=prepare.outputs["study_name"],
            run_id=prepare.outputs["run_id"],
            tuning=dsl.Collected(tune.output),
        ).set_caching_options(False)
        train.set_retry(num_retries=2)  # resumes from its checkpoints
        with_cluster_settings(train)
        if use_gpu:
            request_gpu(train)
        evaluate = evaluate_candidate(
            training_set=training_set,
            model=train.outputs["model"],
            run_id=prepare.outputs["run_id"],
        ).set_caching_options(False)
        with_cluster_settings(evaluate)
        register = register_candidate(
            training_set=training_set,
            model=train.outputs["model"],
            evaluation=evaluate.outputs["Output"],
            trained=train.outputs["Output"],
            run_id=prepare.outputs["run_id"],
            request_id=request_id,
            kfp_run_id=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
            airflow_run_id=airflow_run_id,
        ).set_caching_options(False)
        with_cluster_settings(register)
        return register.output

    return train_pipeline


train_pipeline = build_train_pipeline(use_gpu=False)


def compile_pipelines(directory: Path = HERE) -> dict[bool, Path]:
    """Compile the CPU and GPU pipelines into ``directory``; return the files."""
    written = {}
    for use_gpu, default in COMPILED.items():
        target = directory / default.name
        compiler.Compiler().compile(build_train_pipeline(use_gpu), str(target))
        written[use_gpu] = target
    return written


if __name__ == "__main__":
    for path in compile_pipelines().values():
        print(f"wrote {path}")
