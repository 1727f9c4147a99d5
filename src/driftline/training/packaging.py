"""The registered model's MLflow ``pyfunc`` form: log it, load a version, score with it.

A trained model is logged as a ``pyfunc`` that wraps the torch module *and* its fitted
preprocessor, so anything that loads ``models:/<name>@<alias>`` applies exactly the
training transform. The same model folder also carries the lean serving form
(:mod:`driftline.training.lean`, artifact ``lean``), exported and checked against the
pyfunc's scores before anything is logged: a model whose lean form scores differently
is refused.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from driftline.core.columns import MODEL_INPUTS
from driftline.core.settings import Settings
from driftline.lifecycle.registry import client, version_by_alias

if TYPE_CHECKING:
    import numpy as np

#: Folder (inside the pyfunc model) holding the saved :class:`TrainedModel`.
ARTIFACT_KEY = "fraud_model"


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
    """Log the saved model in ``model_dir`` into the active MLflow run; return its URI.

    The lean form is exported first and checked on ``example`` (see
    :func:`driftline.training.lean.export_checked`).

    Raises:
        driftline.training.lean.LeanMismatchError: The lean form's scores differ from
            the pyfunc's by more than 1e-6; nothing is logged.
    """
    import mlflow
    import torch
    from mlflow.models import infer_signature

    from driftline.training import lean
    from driftline.training.trainer import TrainedModel

    model = TrainedModel.load(model_dir)
    inputs = example[list(MODEL_INPUTS)].head(5).reset_index(drop=True)
    signature = infer_signature(inputs, model.predict_proba(inputs))
    with tempfile.TemporaryDirectory(prefix="driftline-lean-") as scratch:
        lean_dir = Path(scratch) / lean.LEAN_KEY
        lean.export_checked(model, lean_dir, example)  # raises LeanMismatchError
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=_fraud_model_class()(),
            artifacts={ARTIFACT_KEY: str(model_dir), lean.LEAN_KEY: str(lean_dir)},
            signature=signature,
            input_example=inputs,
            code_paths=[str(Path(__file__).resolve().parents[1])],
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                "pandas",
                "scikit-learn",
            ],
        )
    return str(info.model_uri)


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
