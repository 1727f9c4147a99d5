"""The committed Kubeflow pipeline YAML is what the pipeline code compiles to."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from driftline_pipelines.train_pipeline import COMPILED, compile_pipelines


@pytest.fixture(scope="module")
def fresh(tmp_path_factory: pytest.TempPathFactory) -> dict[bool, Path]:
    """The pipelines compiled now, into a temporary folder."""
    return compile_pipelines(tmp_path_factory.mktemp("compiled"))


@pytest.mark.parametrize("use_gpu", [False, True])
def test_compiled_yaml_is_up_to_date(fresh: dict[bool, Path], use_gpu: bool) -> None:
    committed = COMPILED[use_gpu]
    assert committed.read_text() == fresh[use_gpu].read_text(), (
        f"{committed.name} is stale: run `python -m pipelines.train_pipeline` and commit it"
    )


def _executors(path: Path) -> dict[str, dict]:  # type: ignore[type-arg]
    spec = yaml.safe_load(path.read_text())
    return spec["deploymentSpec"]["executors"]  # type: ignore[no-any-return]


def test_only_the_gpu_pipeline_requests_a_gpu_and_only_for_training() -> None:
    gpu = {
        name
        for name, executor in _executors(COMPILED[True]).items()
        if "accelerator" in executor["container"].get("resources", {})
    }
    assert gpu == {"exec-train-best"}
    assert not any(
        "accelerator" in executor["container"].get("resources", {})
        for executor in _executors(COMPILED[False]).values()
    )


def test_tuning_fans_out_over_a_shared_study() -> None:
    spec = yaml.safe_load(COMPILED[False].read_text())
    loops = [
        task
        for task in spec["root"]["dag"]["tasks"].values()
        if "iteratorPolicy" in task or "parameterIterator" in task
    ]
    assert loops, "tuning is not a ParallelFor"
