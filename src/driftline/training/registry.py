"""The MLflow model registry: one registered model, states as aliases, lineage as tags.

A trained model is logged as an MLflow ``pyfunc`` that wraps the torch module *and*
its fitted preprocessor, so anything that loads ``models:/<name>@<alias>`` applies
exactly the training transform. Registry states are the aliases ``staging``,
``canary`` and ``champion``; legacy stages are never used. Every decision (gate passed
or failed, why, the numbers compared) is a tag on the model version.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from driftline.settings import PROJECT_ROOT, Settings
from driftline.training.columns import MODEL_INPUTS

if TYPE_CHECKING:
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

STAGING, CANARY, CHAMPION = "staging", "canary", "champion"
#: Folder (inside the pyfunc model) holding the saved :class:`TrainedModel`.
ARTIFACT_KEY = "fraud_model"


def client(settings: Settings) -> MlflowClient:
    """An MLflow client for the configured tracking server and registry."""
    from mlflow import MlflowClient

    return MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )


def experiment_id(settings: Settings) -> str:
    """Id of the training experiment, created on first use under the artifact root.

    The artifact root is explicit: MLflow's default with a database tracking URI is
    ``./mlruns`` in whatever directory the process happens to run in.
    """
    mlflow_client = client(settings)
    found = mlflow_client.get_experiment_by_name(settings.mlflow_experiment)
    if found is not None:
        return str(found.experiment_id)
    return str(
        mlflow_client.create_experiment(
            settings.mlflow_experiment, artifact_location=settings.mlflow_artifact_uri
        )
    )


def git_commit() -> str:
    """The code commit: ``DRIFTLINE_GIT_COMMIT`` (set in images) or ``git rev-parse``."""
    import os

    if commit := os.environ.get("DRIFTLINE_GIT_COMMIT", "").strip():
        return commit
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def _fraud_model_class() -> type:
    """The pyfunc wrapper class (built lazily: importing mlflow is slow)."""
    from mlflow.pyfunc.model import PythonModel

    class FraudModel(PythonModel):
        """Fraud probability for each row of a model frame (training preprocessing inside)."""

        def load_context(self, context: Any) -> None:
            from driftline.training.trainer import TrainedModel

            self.model = TrainedModel.load(Path(context.artifacts[ARTIFACT_KEY]))

        def predict(
            self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
        ) -> np.ndarray:
            return self.model.predict_proba(model_input)

    return FraudModel


def log_pyfunc(model_dir: Path, example: pd.DataFrame) -> str:
    """Log the saved model in ``model_dir`` into the active MLflow run; return its URI."""
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from driftline.training.trainer import TrainedModel

    model = TrainedModel.load(model_dir)
    inputs = example[list(MODEL_INPUTS)].head(5).reset_index(drop=True)
    signature = infer_signature(inputs, model.predict_proba(inputs))
    info = mlflow.pyfunc.log_model(
        name="model",
        python_model=_fraud_model_class()(),
        artifacts={ARTIFACT_KEY: str(model_dir)},
        signature=signature,
        input_example=inputs,
        code_paths=[str(Path(__file__).resolve().parents[1])],
        pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "pandas", "scikit-learn"],
    )
    return str(info.model_uri)


@dataclass(frozen=True)
class GateResult:
    """The staging gate's verdict, with every check's numbers."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)


def staging_gate(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    behaviour_passed: bool,
    settings: Settings,
) -> GateResult:
    """Apply the gates in settings: absolute PR-AUC floor, no worse than the champion
    beyond the tolerance, and the behavioural checks."""
    reasons: list[str] = []
    floor = settings.gate_min_pr_auc
    checks: dict[str, Any] = {"pr_auc": candidate["pr_auc"], "floor": floor}
    if candidate["pr_auc"] < floor:
        reasons.append(f"pr_auc {candidate['pr_auc']:.4f} is below the floor {floor:.4f}")
    if champion is not None:
        allowed = champion["pr_auc"] - settings.gate_champion_tolerance
        checks.update(champion_pr_auc=champion["pr_auc"], champion_allowed=allowed)
        if candidate["pr_auc"] < allowed:
            reasons.append(
                f"pr_auc {candidate['pr_auc']:.4f} is worse than the champion's "
                f"{champion['pr_auc']:.4f} beyond the tolerance "
                f"{settings.gate_champion_tolerance:.4f}"
            )
    if not behaviour_passed:
        reasons.append("behavioural checks failed (directional amount or invariance)")
    return GateResult(passed=not reasons, reasons=reasons, checks=checks)


def version_by_alias(settings: Settings, alias: str) -> ModelVersion | None:
    """The model version holding ``alias``, or ``None`` when no version holds it."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(settings.model_name, alias)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise


def load_version(settings: Settings, version: str) -> Any:
    """Load one registered version as a pyfunc, from its concrete artifact location.

    The location is resolved with our client, so loading does not depend on MLflow's
    process-global tracking URI (``models:/`` URIs would).
    """
    import mlflow.pyfunc

    location = client(settings).get_model_version_download_uri(settings.model_name, version)
    return mlflow.pyfunc.load_model(location)


def load_alias(settings: Settings, alias: str) -> Any | None:
    """Load ``<name>@<alias>`` as a pyfunc, or ``None`` when the alias is unset."""
    version = version_by_alias(settings, alias)
    if version is None:
        return None
    return load_version(settings, str(version.version))


def predict_frame(pyfunc_model: Any, frame: pd.DataFrame) -> np.ndarray:
    """Scores of a loaded pyfunc on the model inputs of ``frame``."""
    import numpy as np

    scores = pyfunc_model.predict(frame[list(MODEL_INPUTS)])
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def tag_version(settings: Settings, version: str, tags: Mapping[str, Any]) -> None:
    """Set ``tags`` (stringified) on one version of the registered model."""
    mlflow_client = client(settings)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(settings.model_name, version, key, str(value))


def set_alias(settings: Settings, alias: str, version: str) -> None:
    """Point ``alias`` at ``version``."""
    client(settings).set_registered_model_alias(settings.model_name, alias, version)
    log.info("alias %s -> %s version %s", alias, settings.model_name, version)


def describe_version(settings: Settings, version: ModelVersion) -> dict[str, Any]:
    """A registered version as the register step reports it (read back from its tags)."""
    tags = version.tags or {}
    passed = tags.get("gate.staging") == "passed"
    return {
        "model_name": settings.model_name,
        "version": str(version.version),
        "alias": STAGING if passed else "",
        "gate_passed": passed,
        "gate_reasons": [] if passed else [tags.get("gate.reasons", "")],
        "metrics": {"pr_auc": float(tags.get("candidate.pr_auc", "nan"))},
        "mlflow_run_id": str(version.run_id),
    }


def find_version(
    settings: Settings, request_id: str, data_version: str | None = None
) -> ModelVersion | None:
    """The newest version registered for ``request_id`` (and ``data_version``, if given)."""
    versions = client(settings).search_model_versions(f"name = '{settings.model_name}'")
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = version.tags or {}
        if tags.get("request_id") != request_id:
            continue
        if data_version is None or tags.get("data_version") == data_version:
            return version
    return None
