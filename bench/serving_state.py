"""A home for the serving benchmark whose champion has the lean serving form.

The serving benchmark measures the champion of a ``make demo`` home. A home made before
the lean form existed (:mod:`driftline.training.lean`) has a champion that only has its
MLflow pyfunc; driftline then serves it through the pyfunc (the slow path, with a
warning). This script makes a bench home from such a home, leaving the source untouched:

1. the source's Feast folder (registry and SQLite online store, as materialized) is
   copied into the new home, so lookups read the same features;
2. the trained model folder of the source's champion (else newest) version is
   downloaded and registered again into a fresh MLflow registry under the new home with
   :func:`driftline.training.packaging.log_pyfunc`, which exports the lean form and
   checks its scores against the pyfunc's (to 1e-6) on model frames built from the
   benchmark's transactions and the copied store's features;
3. that version gets the ``champion`` alias (tags name the source home and version).

Same weights, same preprocessor, same features: only the packaging is current.

``--train`` (for a source home whose champion predates the model's current inputs,
e.g. the fresh features: its pyfunc no longer predicts with the current code) instead
trains a new model with the current trainer and the source champion's configuration
(architecture and sizes, so the same forward cost; 2 epochs) on a synthetic labelled
frame (:func:`driftline.training.synthetic.model_frame`, every current model input),
then registers it the same way. Its scores mean nothing; its serving path and its cost
are the current code's. Then::

    DRIFTLINE_HOME=<new home> python bench/serving_bench.py

Usage::

    python bench/serving_state.py --source .driftline --home /tmp/bench-serving-home
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from datetime import date
from pathlib import Path

import pandas as pd
from serving_workload import DEFAULT_DAY, choose_version, lookup_features

from driftline.core.settings import Settings
from driftline.lifecycle import registry
from driftline.serving.replay import day_payloads
from driftline.serving.schemas import Transaction
from driftline.serving.scoring import model_frame
from driftline.simulator import SimulatorConfig
from driftline.training import packaging


def download_model_folder(settings: Settings, version: str, into: Path) -> Path:
    """The trained model folder (the pyfunc's ``fraud_model`` artifact) of one version.

    The pyfunc's ``MLmodel`` says where, inside the logged model, that artifact lies.
    """
    import mlflow.artifacts
    import yaml

    location = (
        registry.client(settings)
        .get_model_version_download_uri(settings.model_name, version)
        .rstrip("/")
    )
    mlmodel = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location}/MLmodel",
        dst_path=str(into),
        tracking_uri=settings.mlflow_tracking_uri,
    )
    flavor = yaml.safe_load(Path(mlmodel).read_text())["flavors"]["python_function"]
    inner = flavor["artifacts"][packaging.ARTIFACT_KEY]["path"]
    found = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{location}/{inner}",
        dst_path=str(into),
        tracking_uri=settings.mlflow_tracking_uri,
    )
    return Path(found)


def train_current(source_model: Path, into: Path) -> Path:
    """A model of the current trainer with ``source_model``'s configuration (2 epochs).

    Trained on a synthetic frame with every current model input; written to ``into``.
    """
    import dataclasses
    import json

    from driftline.training.model import ModelConfig
    from driftline.training.synthetic import model_frame
    from driftline.training.trainer import train_model

    config = ModelConfig.from_dict(json.loads((source_model / "config.json").read_text()))
    config = dataclasses.replace(config, max_epochs=2)
    frame = model_frame(n=4000, seed=0)
    model = train_model(config, frame[:3000], frame[3000:], seed=0, device="cpu")
    model.save(into)
    return into


def example_frame(settings: Settings, day: date, rows: int) -> pd.DataFrame:
    """Model frames of ``day``'s simulated transactions with the store's features."""
    config = SimulatorConfig(
        seed=settings.seed, rows_per_day=4000, anchor=settings.simulation_start
    )
    transactions = [Transaction.model_validate(p) for p in day_payloads(config, day, rows)]
    return model_frame(transactions, lookup_features(settings, transactions))


def build(
    source_home: Path, home: Path, version: str | None, day: date, *, train: bool = False
) -> str:
    """Make ``home`` from ``source_home`` (see the module docstring); the new version."""
    import mlflow

    source = Settings(home=source_home)
    chosen, why = choose_version(source, version)
    target = Settings(home=home)
    if (home / "mlflow").exists():
        raise SystemExit(f"{home} already has an MLflow registry: choose an empty --home")
    shutil.copytree(source_home / "feast", home / "feast", dirs_exist_ok=True)
    frame = example_frame(target, day, 2048)
    with tempfile.TemporaryDirectory(prefix="driftline-bench-state-") as scratch:
        model_dir = download_model_folder(source, chosen, Path(scratch))
        if train:
            model_dir = train_current(model_dir, Path(scratch) / "trained")
        mlflow.set_tracking_uri(target.mlflow_tracking_uri)
        mlflow.set_registry_uri(target.mlflow_tracking_uri)
        with mlflow.start_run(experiment_id=registry.experiment_id(target)):
            uri = packaging.log_pyfunc(model_dir, frame)
        registered = mlflow.register_model(uri, target.model_name)
    new_version = str(registered.version)
    client = registry.client(target)
    client.set_model_version_tag(target.model_name, new_version, "source_home", str(source_home))
    client.set_model_version_tag(target.model_name, new_version, "source_version", chosen)
    how = "trained_synthetic_with_source_config" if train else "re-registered"
    client.set_model_version_tag(target.model_name, new_version, "bench_state", how)
    registry.set_alias(target, "champion", new_version)
    what = (
        "trained by the current code with its configuration on synthetic rows"
        if train
        else "re-registered with the lean form"
    )
    print(
        f"{home}: version {new_version} (champion) from {source_home} version {chosen} "
        f"({why}), {what}; Feast store copied"
    )
    return new_version


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the options and build the home."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, required=True, help="A make demo home.")
    parser.add_argument("--home", type=Path, required=True, help="The bench home to make.")
    parser.add_argument("--version", default=None, help="Source version (default: champion).")
    parser.add_argument("--day", type=date.fromisoformat, default=DEFAULT_DAY)
    parser.add_argument(
        "--train",
        action="store_true",
        help="Train a current-code model with the source's configuration (synthetic rows).",
    )
    args = parser.parse_args(argv)
    build(args.source.resolve(), args.home.resolve(), args.version, args.day, train=args.train)
    return 0


if __name__ == "__main__":
    sys.exit(main())
