"""Shared fixtures: an isolated driftline state folder per test, small simulated data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

# One thread per process for torch and BLAS, in the tests and every process they start
# (set before anything imports torch): ``make test`` runs three xdist workers on two
# cores, and torch's default of one thread per core in each of them (and in their KFP
# and tuning subprocesses) oversubscribes the cores; measured, the torch-heavy modules
# took a third more CPU time that way. The models the tests train are the ones the
# closed-loop test's margins were measured with. Set OMP_NUM_THREADS to override.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Spark driver JVMs of the tests (started in-process and by every Airflow, DVC and demo
# subprocess) compile with C1 only and collect with the serial GC: they live for seconds
# on days of a few thousand rows, and the C2 compiler and parallel GC threads cost more
# CPU than they win back. Measured on the feature job of two 1000-row days (2 runs
# each): 28.5 s of CPU per run by default, 19.1 s with C1 only, 17.8 s with both (the
# same rows: Java arithmetic does not depend on the JIT tier). spark-submit hands
# SPARK_SUBMIT_OPTS to the driver JVM without a word (JAVA_TOOL_OPTIONS would announce
# itself on stderr, which the quiet-log tests check). Set SPARK_SUBMIT_OPTS to override.
os.environ.setdefault("SPARK_SUBMIT_OPTS", "-XX:TieredStopAtLevel=1 -XX:+UseSerialGC")

from driftline.core.settings import Settings, get_settings

if TYPE_CHECKING:
    from tests.lakes import LakeTemplates

REPO = Path(__file__).resolve().parents[1]
ANCHOR = date(2026, 1, 1)

#: Folders (under tests/) whose every test drives Airflow, Spark, KFP or the demo loop.
HEAVY_FOLDERS = frozenset({"dags", "e2e"})
#: Fixtures that start an engine (an embedded Airflow; the moto server that Terraform
#: plans and applies against): a test using one, directly or not, is heavy.
HEAVY_FIXTURES = frozenset({"airflow_home", "airflow_template", "moto_server"})
#: The longest modules, in the order they start (longest first): with ``make test``'s
#: xdist workers (``--dist loadfile``, one module per worker at a time) the long ones
#: overlap and the short ones fill in at the end. The rest keep collection order. Three
#: workers on two cores, because the Terraform apply against moto (about 200 s), the
#: scheduler test and the demo loop spend much of their time waiting: measured on the
#: same machine, 9 min 39 s with three workers and 10 min 43 s with two.
LONGEST_FIRST = (
    "e2e/test_closed_loop.py",
    "dags/test_train_register.py",
    "infra/test_infra_terraform.py",
    "e2e/test_no_drift_loop.py",
    "e2e/test_dvc_repro.py",
    "dags/test_scheduler.py",
    "dags/test_ingest_dag.py",
    "dags/test_retrain_promote.py",
)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark heavy tests ``slow`` (before ``-m`` deselects) and start the longest first.

    A test is heavy when its module says so (``pytestmark = pytest.mark.slow``), when it
    lives in a heavy folder or when it uses a heavy fixture: ``make test-fast``
    (``-m "not slow"``) then never starts Spark, Airflow or KFP by accident.
    """
    tests = REPO / "tests"
    rank = {name: index for index, name in enumerate(LONGEST_FIRST)}

    def module(item: pytest.Item) -> str:
        path = Path(str(item.path))
        return path.relative_to(tests).as_posix() if path.is_relative_to(tests) else str(path)

    for item in items:
        folder = module(item).split("/", 1)[0]
        if folder in HEAVY_FOLDERS or HEAVY_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
    order = {id(item): index for index, item in enumerate(items)}
    items.sort(key=lambda item: (rank.get(module(item), len(rank)), order[id(item)]))


@pytest.fixture(autouse=True, scope="session")
def _data_starts_at_anchor() -> Iterator[None]:
    """Every test simulates from :data:`ANCHOR`: declare it the first day of data.

    Look-back days before it are then legitimately absent for the feature job (which
    otherwise requires every one); subprocesses (Airflow, the demo loop) inherit it.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLINE_DATA_START", ANCHOR.isoformat())
        yield


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose every store lives under ``tmp_path`` (also as the process default)."""
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def lake_templates(tmp_path_factory: pytest.TempPathFactory) -> LakeTemplates:
    """Lakes built once per session; ``lake_templates.copy(settings, span, config)``."""
    from tests.lakes import LakeTemplates

    return LakeTemplates(tmp_path_factory.mktemp("lakes"))


#: Environment variables ``mlflow.set_tracking_uri`` / ``set_registry_uri`` export.
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _isolated_mlflow_uris() -> Iterator[None]:
    """Undo MLflow's process-global URIs after each test.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` (needed by the fluent logging API)
    also export environment variables, and the global registry URI becomes the default
    of every later ``MlflowClient(tracking_uri)``: left behind, they point later tests
    and their subprocesses at an earlier test's registry.
    """
    import os

    import mlflow

    saved = {name: os.environ.get(name) for name in MLFLOW_ENV}
    yield
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
