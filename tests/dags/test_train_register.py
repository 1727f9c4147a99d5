"""The training plane end to end, on real parts at small scale.

One lake of simulated days (real gate, Spark features, Feast) is shared by the module.
Then:

1. ``driftline train`` runs the Kubeflow pipeline on the KFP local runner: a version is
   registered in MLflow (SQLite) with every lineage tag and the ``staging`` alias, and
   it beats the trivial baseline by a clear PR-AUC margin;
2. the same request again resumes its Optuna study and registers no second version;
3. that version is made champion, and the Airflow DAG ``train_register`` runs the same
   pipeline with a PR-AUC floor no model can reach: the new version gets no alias, a tag
   says which gate failed, the champion was evaluated on the same holdout, and the
   Airflow run id is in the lineage.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from driftline.core.columns import LABEL
from driftline.core.interval import Interval
from driftline.core.settings import Settings, get_settings
from driftline.lifecycle import registry
from driftline.simulator import SimulatorConfig
from driftline.training import packaging
from driftline.training.dataset import load_split
from driftline.training.evaluate import behavioural_checks, risky_examples
from driftline.training.trainer import TrainedModel
from tests.dags.conftest import BIN, REPO, airflow_env, copy_airflow_db
from tests.lakes import populate_lake

pytestmark = pytest.mark.slow

#: Data starts on 2026-01-01 (the session's DRIFTLINE_DATA_START): the window starts on
#: the first day whose look-back features are complete (data start + 14 days).
SPAN = Interval.parse("2026-01-01", "2026-01-28")
WINDOW = ("2026-01-15", "2026-01-28")
#: Small, fast settings for every process of this module: chargebacks count as mature
#: after 3 days and one day validates, so 7 of the window's 13 days train.
TRAINING_ENV = {
    "DRIFTLINE_MAX_EPOCHS": "6",
    "DRIFTLINE_TUNING_TRIALS": "4",
    "DRIFTLINE_TUNING_WORKERS": "2",
    "DRIFTLINE_LABEL_MATURITY_DAYS": "3",
    "DRIFTLINE_VALID_DAYS": "1",
}
LINEAGE_TAGS = (
    "data_interval",
    "label_cutoff",
    "data_version",
    "feast_feature_service",
    "feast_feature_service_version",
    "git_commit",
    "kfp_run_id",
    "airflow_run_id",
    "mlflow_run_id",
    "optuna_study",
    "optuna_trial",
    "candidate.pr_auc",
    "gate.staging",
    "gate.reasons",
)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A populated lake under a module-wide state folder."""
    root = tmp_path_factory.mktemp("training")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLINE_HOME", str(root / "state"))
        get_settings.cache_clear()
        populate_lake(get_settings(), SPAN, SimulatorConfig(rows_per_day=3000, fraud_rate=0.02))
        yield root
    get_settings.cache_clear()


def _settings(home: Path, **overrides: Any) -> Settings:
    return Settings(home=home / "state", **overrides)


def _run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        list(args),
        env={**airflow_env(home), **TRAINING_ENV, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise AssertionError(f"{args} failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")
    return done


def _train(home: Path, summary: Path) -> dict[str, Any]:
    """``driftline train`` on the window; returns the outcome it wrote to ``summary``."""
    start, end = WINDOW
    _run(
        home,
        str(BIN / "driftline"),
        "train",
        "--start",
        start,
        "--end",
        end,
        "--summary",
        str(summary),
    )
    outcome: dict[str, Any] = json.loads(summary.read_text())
    return outcome


@pytest.fixture(scope="module")
def first(home: Path) -> dict[str, Any]:
    """The first training of the window."""
    return _train(home, home / "first.json")


def _first_run(settings: Settings, artifact: str) -> Path:
    """An artifact folder of the first pipeline run (runs are named by start time)."""
    found = sorted((settings.training_dir / "kfp").glob(f"train-pipeline-*/{artifact}"))
    assert found, f"no {artifact} artifact under {settings.training_dir}"
    return found[0]


def test_pipeline_registers_staging_with_lineage(home: Path, first: dict[str, Any]) -> None:
    settings = _settings(home)
    client = registry.client(settings)
    assert first["gate_passed"] and first["alias"] == "staging"
    staged = client.get_model_version_by_alias(settings.model_name, "staging")
    assert str(staged.version) == first["version"]
    for tag in LINEAGE_TAGS:
        assert staged.tags.get(tag), f"missing lineage tag {tag}"
    assert staged.tags["data_interval"] == "[2026-01-15, 2026-01-28)"
    assert staged.tags["feast_feature_service"] == "fraud_v1"
    assert staged.tags["kfp_run_id"] != "none" and staged.tags["airflow_run_id"] == "none"
    parent = client.get_run(staged.run_id)
    assert parent.data.metrics["candidate_pr_auc"] == pytest.approx(first["metrics"]["pr_auc"])
    assert any(k.startswith("importance_") for k in parent.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(staged.run_id, "evaluation")}
    assert {"evaluation/pr_curve.png", "evaluation/calibration.png"} <= artifacts
    trials = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{staged.run_id}'"
    )
    assert len(trials) >= 4  # every Optuna trial is a child run


def test_short_training_beats_the_trivial_baseline(first: dict[str, Any]) -> None:
    metrics = first["metrics"]
    # A constant score's PR-AUC is the base rate (~0.02 here). Features are those the
    # daily-materialized online store serves (as of the day before), which carry no
    # same-day velocity, so the bar is a multiple of the base rate, not a high PR-AUC.
    assert metrics["pr_auc"] >= 3 * metrics["base_rate"]
    assert metrics["roc_auc"] >= 0.75


def test_reference_model_behaves(home: Path, first: dict[str, Any]) -> None:
    """Directional (amount) and invariance checks on the registered reference model."""
    settings = _settings(home)
    directory = _first_run(settings, "prepare-training/training_set")
    holdout = load_split(directory, "holdout")
    model = packaging.load_alias(settings, "staging")
    assert model is not None

    def predict(frame: Any) -> Any:
        return packaging.predict_frame(model, frame)

    examples = risky_examples(holdout)
    assert len(examples) >= 50 and examples[LABEL].sum() > 0
    checks = behavioural_checks(predict, examples)
    assert checks["directional_amount_violations"] == 0
    doubled = predict(examples.assign(amount=examples["amount"] * 2))
    assert np.all(doubled >= predict(examples) - 1e-9)
    twice = predict(examples.iloc[[0, 0, 0]])
    assert twice[0] == twice[1] == twice[2]  # identical rows: bit-identical scores
    # A row alone vs inside a batch: float32 kernels may round differently (~1e-6).
    assert checks["invariance_max_diff"] < 1e-5 and checks["passed"]


def test_registered_pyfunc_matches_the_trained_model(home: Path, first: dict[str, Any]) -> None:
    """Serving loads exactly the training transform: pyfunc scores = the saved model's."""
    settings = _settings(home)
    holdout = load_split(_first_run(settings, "prepare-training/training_set"), "holdout")
    direct = TrainedModel.load(_first_run(settings, "train-best/model")).predict_proba(holdout)
    served = packaging.predict_frame(packaging.load_alias(settings, "staging"), holdout)
    assert np.array_equal(direct, served)


def test_rerunning_a_request_resumes_its_study_and_registers_no_copy(
    home: Path, first: dict[str, Any]
) -> None:
    import optuna

    from driftline.training.steps import study_name
    from driftline.training.tuning import open_storage

    settings = _settings(home)
    name = study_name(settings, "2026-01-15_2026-01-28")
    before = len(
        optuna.load_study(study_name=name, storage=open_storage(settings.optuna_storage)).trials
    )
    again = _train(home, home / "again.json")
    after = optuna.load_study(study_name=name, storage=open_storage(settings.optuna_storage))
    assert len(after.trials) == before + 4  # the same study, resumed from its journal
    assert again["version"] == first["version"]  # same request, same data: no new version
    versions = registry.client(settings).search_model_versions(f"name = '{settings.model_name}'")
    assert len(versions) == 1


def test_dag_run_failing_a_gate_gets_no_alias(
    home: Path, first: dict[str, Any], airflow_template: Path
) -> None:
    settings = _settings(home)
    client = registry.client(settings)
    client.set_registered_model_alias(settings.model_name, "champion", first["version"])
    copy_airflow_db(airflow_template, home)  # migrated and reserialized once per session
    conf = {"window_start": WINDOW[0], "window_end": WINDOW[1], "trials": 2, "workers": 1}
    done = _run(
        home,
        sys.executable,
        str(REPO / "scripts" / "run_dag.py"),
        "train_register",
        "--conf",
        json.dumps(conf),
        DRIFTLINE_GATE_MIN_PR_AUC="0.99",
    )
    assert "train_register manual run: success" in done.stdout

    versions = client.search_model_versions(f"name = '{settings.model_name}'")
    newest = max(versions, key=lambda v: int(v.version))
    assert str(newest.version) != first["version"]
    assert not newest.aliases
    assert newest.tags["gate.staging"] == "failed"
    assert "below the floor 0.9900" in newest.tags["gate.reasons"]
    assert newest.tags["airflow_run_id"].startswith("manual__")
    assert newest.tags["request_id"] == f"airflow-{newest.tags['airflow_run_id']}"
    assert newest.tags["champion.version"] == first["version"]
    assert float(newest.tags["champion.pr_auc"]) == pytest.approx(
        first["metrics"]["pr_auc"], abs=1e-6
    )  # the champion was scored on the same holdout
    staged = client.get_model_version_by_alias(settings.model_name, "staging")
    assert str(staged.version) == first["version"]  # the failed candidate moved nothing
