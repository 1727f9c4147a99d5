"""The committed Kubeflow pipeline YAML is what the pipeline code compiles to, and it
runs on a cluster as committed: every task gets the settings ConfigMap and the database
Secret, the GPU pipeline's train step one GPU; the KFP local runner ignores both.

(No ``from __future__ import annotations``: KFP reads the probe component's annotations.)
"""

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from driftline_pipelines.train_pipeline import (
    COMPILED,
    compile_pipelines,
    request_gpu,
    with_cluster_settings,
)
from kfp import dsl

from driftline.core.cluster import (
    DB_PASSWORD_KEY,
    DB_SECRET,
    GPU_RESOURCE,
    OPTIONAL_SETTINGS_KEYS,
    SETTINGS_CONFIG_MAP,
    SETTINGS_KEYS,
)
from tests.conftest import REPO

#: The components of the pipeline, one executor each.
EXECUTORS = {
    "exec-prepare-training",
    "exec-tune-worker",
    "exec-train-best",
    "exec-evaluate-candidate",
    "exec-register-candidate",
}


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


def _documents(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pipeline spec and the platform (Kubernetes) spec of a compiled pipeline."""
    pipeline, platform = yaml.safe_load_all(path.read_text())
    return pipeline, platform


def _executors(path: Path) -> dict[str, dict[str, Any]]:
    """The container spec of each executor."""
    return _documents(path)[0]["deploymentSpec"]["executors"]  # type: ignore[no-any-return]


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
    spec, _ = _documents(COMPILED[False])
    loops = [
        task
        for task in spec["root"]["dag"]["tasks"].values()
        if "iteratorPolicy" in task or "parameterIterator" in task
    ]
    assert loops, "tuning is not a ParallelFor"


def _kubernetes(path: Path) -> dict[str, dict[str, Any]]:
    """The Kubernetes platform settings of each executor in a compiled pipeline."""
    platform = _documents(path)[1]["platforms"]["kubernetes"]
    return platform["deploymentSpec"]["executors"]  # type: ignore[no-any-return]


def _mapped(entries: list[dict[str, Any]], key: str) -> dict[bool, set[str]]:
    """Keys mapped one-to-one to variables, by whether the source is optional."""
    mapped: dict[bool, set[str]] = {False: set(), True: set()}
    for entry in entries:
        for pair in entry["keyToEnv"]:
            assert pair[key] == pair["envVar"], pair
            mapped[entry["optional"]].add(pair["envVar"])
    return mapped


@pytest.mark.parametrize("use_gpu", [False, True])
def test_every_executor_gets_the_settings_config_map_and_the_db_secret(use_gpu: bool) -> None:
    platform = _kubernetes(COMPILED[use_gpu])
    assert set(platform) == set(_executors(COMPILED[use_gpu])) == EXECUTORS
    for name, executor in platform.items():
        maps = executor["configMapAsEnv"]
        assert {entry["configMapName"] for entry in maps} == {SETTINGS_CONFIG_MAP}, name
        assert _mapped(maps, "configMapKey") == {
            False: set(SETTINGS_KEYS),
            True: set(OPTIONAL_SETTINGS_KEYS),
        }, name
        secrets = executor["secretAsEnv"]
        assert {entry["secretName"] for entry in secrets} == {DB_SECRET}, name
        assert _mapped(secrets, "secretKey") == {
            False: {DB_PASSWORD_KEY},
            True: set(),
        }, name


def test_the_gpu_train_step_requests_one_gpu_and_tolerates_the_gpu_taint() -> None:
    accelerator = _executors(COMPILED[True])["exec-train-best"]["container"]["resources"]
    assert accelerator["accelerator"]["resourceType"] == GPU_RESOURCE
    assert accelerator["accelerator"]["resourceCount"] == "1"
    tolerations = {
        name: executor.get("tolerations") for name, executor in _kubernetes(COMPILED[True]).items()
    }
    assert tolerations.pop("exec-train-best") == [
        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert not any(tolerations.values())
    assert not any(e.get("tolerations") for e in _kubernetes(COMPILED[False]).values())


def test_the_settings_keys_are_the_keys_terraform_renders() -> None:
    template = REPO / "infra" / "terraform" / "templates" / "driftline.env.tftpl"
    lines = template.read_text().splitlines()
    keys = {m.group(1) for line in lines if (m := re.match(r"([A-Z][A-Z0-9_]*)=", line))}
    assert keys == set(SETTINGS_KEYS) | set(OPTIONAL_SETTINGS_KEYS)
    conditional = re.findall(r"%\{ if [^}]*\}\s*\n([A-Z_]+)=", template.read_text())
    assert set(conditional) == set(OPTIONAL_SETTINGS_KEYS)


def test_the_manifests_mount_the_same_config_map_and_secret() -> None:
    """deploy/k8s and the Airflow chart values name the objects the pipeline maps."""
    sources: list[dict[str, Any]] = []
    for name in ("serve.yaml", "mlflow.yaml"):
        for doc in yaml.safe_load_all((REPO / "deploy" / "k8s" / "base" / name).read_text()):
            if doc and doc["kind"] == "Deployment":
                for container in doc["spec"]["template"]["spec"]["containers"]:
                    sources.extend(container["envFrom"])
    values = yaml.safe_load((REPO / "deploy" / "helm" / "airflow-values.yaml").read_text())
    sources.extend(yaml.safe_load(values["extraEnvFrom"]))
    names = {
        kind: {s[kind]["name"] for s in sources if kind in s}
        for kind in ("configMapRef", "secretRef")
    }
    assert names["configMapRef"] == {SETTINGS_CONFIG_MAP}
    assert DB_SECRET in names["secretRef"]


@dsl.component(base_image="python:3.11", install_kfp_package=False)  # type: ignore[untyped-decorator]
def _read_settings(key: str) -> str:
    import os

    return os.environ.get(key, "<unset>")


@dsl.pipeline(name="cluster-settings-probe")  # type: ignore[untyped-decorator]
def _probe(key: str) -> str:
    task = _read_settings(key=key).set_caching_options(False)
    return request_gpu(with_cluster_settings(task)).output  # type: ignore[no-any-return]


@pytest.mark.slow
def test_the_local_runner_ignores_the_kubernetes_settings_and_the_gpu_request(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The wiring `driftline train` runs with locally: steps inherit this environment."""
    from kfp import local

    monkeypatch.setenv("DRIFTLINE_PROBE", "from-this-process")
    local.init(runner=local.SubprocessRunner(use_venv=False), pipeline_root=str(tmp_path))
    with pytest.warns(UserWarning, match=r"\['accelerator'\] have no effect"):
        assert _probe(key="DRIFTLINE_PROBE").output == "from-this-process"
