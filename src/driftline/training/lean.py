"""The lean serving form of a model: TorchScript module + NumPy preprocessing.

The registered MLflow pyfunc (:mod:`driftline.training.packaging`) stays the model's
compatible form; beside it, registration exports this one for the scoring service:

* ``module.pt``: the torch module traced to TorchScript (no Python model classes
  needed to run it);
* ``preprocessor.json``: the fitted :class:`~driftline.training.model.Preprocessor`,
  applied by :class:`ArrayPreprocessor` with NumPy on plain column arrays (the same
  signed log1p, standardisation, clip, missing indicators and vocabularies, in the
  same float64 arithmetic) instead of pandas;
* ``lean.json``: the format, the rows it was checked on and the largest difference.

:func:`export_checked` refuses a lean form whose scores differ from the pyfunc's
(``TrainedModel.predict_proba``, which the pyfunc's ``predict`` calls) by more than
:data:`TOLERANCE` on the example rows. The serving side loads it with
:func:`load_version` (``None`` for versions registered before it existed).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd
import torch

from driftline.core.columns import CATEGORICAL, FRESH_NUMERIC, MODEL_INPUTS, NUMERIC, STORE_NUMERIC
from driftline.core.settings import Settings
from driftline.training.model import (
    CLIP,
    NUMERIC_TABLE,
    Preprocessor,
    _signed_log1p,
    numeric_table,
)

if TYPE_CHECKING:
    from driftline.training.trainer import TrainedModel

log = logging.getLogger(__name__)

#: Bumped whenever the lean layout changes; a loader refuses other formats.
LEAN_FORMAT = 1
MODULE_FILE = "module.pt"
PREPROCESSOR_FILE = "preprocessor.json"
MANIFEST_FILE = "lean.json"
#: Folder (inside the pyfunc model's artifacts) holding the lean form.
LEAN_KEY = "lean"
#: Largest absolute score difference from the pyfunc a lean form may have.
TOLERANCE = 1e-6
#: Example rows the export checks (plus the same rows with store features missing and
#: categories unknown, so the missing and unknown branches are compared too).
CHECK_ROWS = 1000

#: ``MODEL_INPUTS`` name -> one value per row: numbers (NaN or None where missing) for
#: numeric inputs, strings (None where missing) for categorical ones.
Columns = Mapping[str, Any]


class LeanMismatchError(ValueError):
    """The lean form does not score like the pyfunc: the model is not registered."""


@dataclass(frozen=True)
class ArrayPreprocessor:
    """A :class:`Preprocessor` compiled to arrays, applied with NumPy to whole tables.

    Attributes:
        names: Numeric inputs in tensor order (contract and derived columns).
        order: Positions of ``names`` in :data:`NUMERIC_TABLE` (None: the same order).
        log: Per numeric input, whether it takes the signed log1p.
        mean: Training mean per numeric input (after the log).
        std: Training standard deviation per numeric input.
        indicators: Positions in ``names`` of the inputs with a missing indicator.
        vocabularies: Per categorical input, its name and ``value -> code`` map.
    """

    names: tuple[str, ...]
    order: np.ndarray | None
    log: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    indicators: np.ndarray
    vocabularies: tuple[tuple[str, dict[str, int]], ...]

    @classmethod
    def from_preprocessor(cls, preprocessor: Preprocessor) -> ArrayPreprocessor:
        """Compile ``preprocessor`` (read from its saved JSON or fitted)."""
        numeric = preprocessor.numeric
        names = tuple(s.name for s in numeric)
        order = [NUMERIC_TABLE.index(name) for name in names]
        return cls(
            names=names,
            order=None if order == list(range(len(NUMERIC_TABLE))) else np.array(order),
            log=np.array([s.log for s in numeric], dtype=bool),
            mean=np.array([s.mean for s in numeric], dtype=np.float64),
            std=np.array([s.std for s in numeric], dtype=np.float64),
            indicators=np.array([i for i, s in enumerate(numeric) if s.indicator], dtype=np.int64),
            vocabularies=tuple(
                (v.name, {value: i for i, value in enumerate(v.values, start=1)})
                for v in preprocessor.categorical
            ),
        )

    def transform(self, columns: Columns) -> tuple[np.ndarray, np.ndarray]:
        """``(numeric float32 [n, n_numeric], categorical int64 [n, n_categorical])``.

        Equal to :meth:`Preprocessor.transform` on the same rows: the per-column steps
        of ``_transform_numeric`` applied to all columns at once (elementwise, so the
        same bits), indicators after the values, codes 0 for unknown or missing.
        """
        raw = numeric_table(columns)
        if self.order is not None:
            raw = raw[:, self.order]
        rows = raw.shape[0]
        missing = np.isnan(raw)
        values = np.where(self.log, _signed_log1p(raw), raw)
        scaled = np.clip((values - self.mean) / self.std, -CLIP, CLIP)
        scaled[missing] = 0.0
        flags = missing[:, self.indicators].astype(np.float64)
        numeric = np.concatenate([scaled, flags], axis=1).astype(np.float32)
        codes = [
            np.fromiter((index.get(v, 0) for v in columns[name]), dtype=np.int64, count=rows)
            for name, index in self.vocabularies
        ]
        categorical = np.stack(codes, axis=1) if codes else np.empty((rows, 0), dtype=np.int64)
        return numeric, categorical


class LeanModel:
    """Fraud probabilities from column arrays: NumPy preprocessing, TorchScript forward.

    Thread-safe: the module is only called for inference (no state changes).
    """

    def __init__(self, preprocessor: ArrayPreprocessor, module: torch.jit.ScriptModule) -> None:
        """Wrap a compiled preprocessor and a TorchScript module in eval mode."""
        self.preprocessor = preprocessor
        self.module = module

    def predict_columns(self, columns: Columns) -> np.ndarray:
        """Fraud probability per row as float64 ``[n]`` (one forward pass)."""
        numeric, categorical = self.preprocessor.transform(columns)
        if numeric.shape[0] == 0:
            return np.empty(0, dtype=np.float64)
        with torch.inference_mode():
            logits = self.module(torch.from_numpy(numeric), torch.from_numpy(categorical))
            return torch.sigmoid(logits.double()).numpy()

    def warm_up(self, passes: int = 3) -> None:
        """Run a few forward passes (TorchScript optimises its graph on the first calls)."""
        row: dict[str, Any] = {name: np.array([np.nan]) for name in NUMERIC}
        row.update({name: [None] for name in CATEGORICAL})
        for size in (1, 2):  # a lone row and a merged batch
            batch = {
                k: (np.repeat(v, size) if isinstance(v, np.ndarray) else v * size)
                for k, v in row.items()
            }
            for _ in range(passes):
                self.predict_columns(batch)


def frame_columns(frame: pd.DataFrame) -> dict[str, Any]:
    """The :data:`Columns` of a model frame (as the training preprocessing reads it)."""
    columns: dict[str, Any] = {
        name: pd.to_numeric(frame[name], errors="coerce").astype("float64").to_numpy()
        for name in NUMERIC
    }
    for name in CATEGORICAL:
        values = frame[name].astype("string")
        columns[name] = [None if pd.isna(v) else str(v) for v in values]
    return columns


def check_rows(example: pd.DataFrame) -> pd.DataFrame:
    """The rows an export is checked on: example rows, then copies without history.

    The copies have every store and fresh feature missing (a feature-store or
    event-store fallback) and unknown categories, so the missing-value and
    unknown-category branches are compared as well.
    """
    rows = example[list(MODEL_INPUTS)].head(CHECK_ROWS).reset_index(drop=True)
    blank = rows.head(20).copy()
    blank[list(STORE_NUMERIC + FRESH_NUMERIC)] = np.nan
    for name in CATEGORICAL:
        blank[name] = "unseen-category"
    return pd.concat([rows, blank], ignore_index=True)


def trace(model: TrainedModel, rows: pd.DataFrame) -> torch.jit.ScriptModule:
    """The model's torch module as frozen TorchScript, traced on ``rows``."""
    numeric, categorical = model.preprocessor.transform(rows.head(8))
    module = model.module.eval()
    with torch.no_grad():
        # torch.jit has no type hints in this torch release.
        traced = torch.jit.trace(  # type: ignore[no-untyped-call]
            module, (numeric, categorical), check_trace=False
        )
    return cast(torch.jit.ScriptModule, torch.jit.freeze(traced.eval()))


def export_checked(
    model: TrainedModel, directory: Path, example: pd.DataFrame, *, tolerance: float = TOLERANCE
) -> float:
    """Write the lean form of ``model`` to ``directory`` after checking its scores.

    Args:
        model: The trained model (the pyfunc wraps exactly this).
        directory: Where to write ``module.pt``, ``preprocessor.json`` and ``lean.json``.
        example: Model-frame rows to trace and check on (the register step's holdout).
        tolerance: Largest absolute score difference accepted.

    Returns:
        The largest absolute difference from ``model.predict_proba`` on the checked rows.

    Raises:
        LeanMismatchError: A score differs by more than ``tolerance`` (or is not
            finite); nothing is written then.
    """
    rows = check_rows(example)
    lean = LeanModel(ArrayPreprocessor.from_preprocessor(model.preprocessor), trace(model, rows))
    expected = model.predict_proba(rows)
    got = lean.predict_columns(frame_columns(rows))
    diff = float(np.max(np.abs(got - expected))) if len(rows) else 0.0
    if not (np.all(np.isfinite(got)) and diff <= tolerance):
        raise LeanMismatchError(
            f"lean scores differ from the pyfunc's by {diff:.3g} on {len(rows)} example rows "
            f"(at most {tolerance} allowed): not registering this model"
        )
    directory.mkdir(parents=True, exist_ok=True)
    torch.jit.save(lean.module, str(directory / MODULE_FILE))
    (directory / PREPROCESSOR_FILE).write_text(json.dumps(model.preprocessor.to_dict()) + "\n")
    manifest = {
        "format": LEAN_FORMAT,
        "checked_rows": len(rows),
        "max_abs_diff": diff,
        "tolerance": tolerance,
        "torch": torch.__version__,
    }
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    log.info("lean form checked on %d rows (max |diff| %.3g)", len(rows), diff)
    return diff


def load(directory: Path) -> LeanModel:
    """Load a lean form written by :func:`export_checked`.

    Raises:
        ValueError: An unknown format.
    """
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    if manifest.get("format") != LEAN_FORMAT:
        raise ValueError(f"unsupported lean format {manifest.get('format')!r} in {directory}")
    preprocessor = Preprocessor.from_dict(json.loads((directory / PREPROCESSOR_FILE).read_text()))
    module = torch.jit.load(  # type: ignore[no-untyped-call]
        str(directory / MODULE_FILE), map_location="cpu"
    )
    model = LeanModel(ArrayPreprocessor.from_preprocessor(preprocessor), module.eval())
    model.warm_up()  # before it serves: the first requests must not pay for it
    return model


def load_version(settings: Settings, version: str) -> LeanModel | None:
    """The lean form of one registered version, or ``None`` if it was registered without.

    Only the lean files are read (a few KB; no pyfunc, pandas or MLflow model code is
    loaded): in place from a local artifact store, else fetched into a temporary folder
    removed once they are read.
    """
    import mlflow.artifacts
    from mlflow.exceptions import MlflowException

    from driftline.lifecycle.registry import client

    location = client(settings).get_model_version_download_uri(settings.model_name, version)
    local = _local_path(location)
    if local is not None:  # a local artifact store: read in place, nothing copied
        folder = local / "artifacts" / LEAN_KEY
        return load(folder) if (folder / MANIFEST_FILE).is_file() else None
    scratch = Path(tempfile.mkdtemp(prefix=f"driftline-lean-{version}-"))
    try:
        try:
            found = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{location.rstrip('/')}/artifacts/{LEAN_KEY}",
                dst_path=str(scratch),
                tracking_uri=settings.mlflow_tracking_uri,
            )
        except (MlflowException, OSError):
            return None
        folder = Path(found)
        if not (folder / MANIFEST_FILE).is_file():
            return None
        return load(folder)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _local_path(location: str) -> Path | None:
    """The folder of a ``file:`` URI or plain path; ``None`` for remote stores."""
    from urllib.parse import unquote, urlparse

    parsed = urlparse(location)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "" or len(parsed.scheme) == 1:  # a path (or a Windows drive)
        return Path(location)
    return None
