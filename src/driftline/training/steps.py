"""The training pipeline's steps: each Kubeflow component is one call into this module.

``prepare`` -> ``tune`` (N workers on one Optuna study) -> ``train_best`` ->
``evaluate`` -> ``register``. Steps exchange folders (KFP artifacts locally and on a
cluster) and JSON-ready dicts; every step takes its :class:`Settings` explicitly and
reads no clock. One MLflow *parent run* per training request holds the tuning trials
(child runs), the final model and the evaluation; it is found again by the request id,
so a rerun of the same request resumes the same study and run instead of starting over.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from driftline.core.columns import LABEL, MODEL_INPUTS
from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.lifecycle import gates, registry
from driftline.training import packaging
from driftline.training.dataset import SPLITS, build_training_set, load_manifest, load_split

log = logging.getLogger(__name__)

EVALUATION_FILE = "evaluation.json"
#: Version tag holding the ``runs:/`` URI of the version's drift reference sample.
DRIFT_REFERENCE_TAG = "drift_reference"
DRIFT_REFERENCE_DIR = "drift_reference"
DRIFT_REFERENCE_FILE = "reference.parquet"


def default_request_id(window: Interval) -> str:
    """The idempotency key of a training request: its window."""
    return f"{window.start.date().isoformat()}_{window.end.date().isoformat()}"


def study_name(settings: Settings, request_id: str) -> str:
    """The Optuna study shared by every tuning worker of one request."""
    return f"{settings.model_name}-{request_id}"


def _parent_run(settings: Settings, request_id: str, tags: dict[str, str]) -> str:
    """Find or create the MLflow parent run of ``request_id``."""
    mlflow_client = registry.client(settings)
    experiment = registry.experiment_id(settings)
    found = mlflow_client.search_runs(
        [experiment], filter_string=f"tags.request_id = '{request_id}'", max_results=1
    )
    if found:
        return str(found[0].info.run_id)
    run = mlflow_client.create_run(
        experiment, run_name=f"train {request_id}", tags={"request_id": request_id, **tags}
    )
    return str(run.info.run_id)


def prepare(
    window: Interval,
    training_set_dir: Path,
    settings: Settings,
    *,
    request_id: str,
    kfp_run_id: str = "",
    airflow_run_id: str = "",
) -> dict[str, Any]:
    """Build the training set and open (or find) the request's MLflow run.

    Returns:
        ``run_id`` (the MLflow parent run) and ``study_name``.
    """
    built = build_training_set(window, training_set_dir, settings)
    tags = {"kfp_run_id": kfp_run_id, "airflow_run_id": airflow_run_id}
    run_id = _parent_run(settings, request_id, tags)
    mlflow_client = registry.client(settings)
    for split in ("train", "valid", "holdout"):
        mlflow_client.log_metric(run_id, f"rows_{split}", built.rows[split])
        mlflow_client.log_metric(run_id, f"frauds_{split}", built.positives[split])
    mlflow_client.set_tag(run_id, "data_interval", built.window)
    mlflow_client.set_tag(run_id, "data_version", built.data_version)
    mlflow_client.log_dict(run_id, built.to_dict(), "training_set/manifest.json")
    return {
        "run_id": run_id,
        "study_name": study_name(settings, request_id),
    }


def tune(
    training_set_dir: Path,
    settings: Settings,
    *,
    request_id: str,
    trials: int,
    worker: int,
) -> dict[str, Any]:
    """One tuning worker: ``trials`` more trials on the request's shared study.

    The study and the MLflow parent run are found by the request id (both exist once
    :func:`prepare` ran), so workers need no other input.
    """
    from driftline.training import tuning

    study = study_name(settings, request_id)
    run_id = _parent_run(settings, request_id, {})
    summary = tuning.tune(
        study,
        load_split(training_set_dir, "train"),
        load_split(training_set_dir, "valid"),
        n_trials=trials,
        storage_url=settings.optuna_storage,
        seed=settings.train_seed,
        worker=worker,
        max_epochs=settings.max_epochs,
        tracking_uri=settings.mlflow_tracking_uri,
        parent_run_id=run_id,
    )
    log.info("tuning worker %d of %s finished: %s", worker, study, summary)
    return summary


def train_best(
    training_set_dir: Path,
    model_dir: Path,
    settings: Settings,
    *,
    study: str,
    run_id: str,
) -> dict[str, Any]:
    """Train the study's best configuration fully and save it to ``model_dir``.

    Checkpoints go under ``settings.training_dir/checkpoints/<run_id>/trial-<n>`` (the
    request's MLflow run and the best trial), so a retried step resumes where the
    interrupted one stopped, and a rerun whose study found a better trial starts afresh.
    """
    from driftline.training import tuning
    from driftline.training.trainer import train_model

    loaded = tuning.load_study(study, settings.optuna_storage, seed=settings.train_seed)
    summary = tuning.summarize_study(loaded)
    config = tuning.best_config(loaded, max_epochs=settings.max_epochs)
    trial = summary["best_trial"]
    model = train_model(
        config,
        load_split(training_set_dir, "train"),
        load_split(training_set_dir, "valid"),
        seed=settings.train_seed,
        checkpoint_dir=settings.training_dir / "checkpoints" / run_id / f"trial-{trial}",
    )
    model.save(model_dir)
    tuning.log_study_summary(summary, tracking_uri=settings.mlflow_tracking_uri, run_id=run_id)
    mlflow_client = registry.client(settings)
    # Tags, not params: a rerun of the request may find a better trial, and MLflow
    # params are immutable.
    for key, value in config.to_dict().items():
        mlflow_client.set_tag(run_id, f"model.{key}", str(value))
    for row in model.history:
        mlflow_client.log_metric(
            run_id, "final_valid_pr_auc", row["valid_pr_auc"], step=row["epoch"]
        )
    return {
        "study": study,
        "trial": trial,
        "config": config.to_dict(),
        "device": model.device_used,
        "best_valid_pr_auc": model.best_valid_pr_auc,
    }


def _champion_metrics(settings: Settings, holdout: Any) -> tuple[dict[str, Any] | None, Any]:
    """The champion's metrics and scores on the same holdout (``None``s without one)."""
    from driftline.training.evaluate import evaluate_predict

    version = registry.version_by_alias(settings, registry.CHAMPION)
    if version is None:
        return None, None
    champion = packaging.load_version(settings, str(version.version))

    def predict(frame: Any) -> Any:
        return packaging.predict_frame(champion, frame)

    metrics, scores = evaluate_predict(predict, holdout)
    return {**metrics, "version": str(version.version)}, scores


def evaluate(
    training_set_dir: Path, model_dir: Path, report_dir: Path, settings: Settings, *, run_id: str
) -> dict[str, Any]:
    """Score the candidate (and the champion) on the recent holdout; write plots.

    Writes ``evaluation.json``, the PR curve and the calibration plot to
    ``report_dir`` and logs them, prefixed ``candidate_`` / ``champion_``, to the run.
    """
    from driftline.training.evaluate import (
        behavioural_checks,
        evaluate_predict,
        risky_examples,
        write_curves,
    )
    from driftline.training.trainer import TrainedModel

    holdout = load_split(training_set_dir, "holdout")
    model = TrainedModel.load(model_dir)
    candidate, scores = evaluate_predict(model.predict_proba, holdout)
    behaviour = behavioural_checks(model.predict_proba, risky_examples(holdout))
    champion, champion_scores = _champion_metrics(settings, holdout)
    if champion_scores is not None:
        from driftline.core.stats import psi

        # What the canary analysis should expect live: how differently the two score.
        candidate["score_psi_vs_champion"] = psi(champion_scores, scores)
    report_dir.mkdir(parents=True, exist_ok=True)
    curves = write_curves(holdout[LABEL].to_numpy(), scores, report_dir)
    result = {"candidate": candidate, "champion": champion, "behaviour": behaviour}
    (report_dir / EVALUATION_FILE).write_text(json.dumps(result, indent=2, default=str))
    _log_evaluation(settings, run_id, result, curves.values())
    return result


def _log_evaluation(settings: Settings, run_id: str, result: dict[str, Any], files: Any) -> None:
    mlflow_client = registry.client(settings)
    for prefix in ("candidate", "champion"):
        for key, value in (result[prefix] or {}).items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                mlflow_client.log_metric(run_id, f"{prefix}_{key}", float(value))
    for path in files:
        mlflow_client.log_artifact(run_id, str(path), "evaluation")


def register(
    training_set_dir: Path,
    model_dir: Path,
    evaluation: dict[str, Any],
    trained: dict[str, Any],
    settings: Settings,
    *,
    run_id: str,
    request_id: str,
    kfp_run_id: str = "",
    airflow_run_id: str = "",
) -> dict[str, Any]:
    """Register the candidate with its lineage; alias ``staging`` only if the gates pass.

    A rerun of the same request on the same data returns the version it registered
    before instead of registering a copy.
    """
    manifest = load_manifest(training_set_dir)
    existing = registry.find_version(settings, request_id, manifest["data_version"])
    if existing is not None:
        log.info("request %s already registered as version %s", request_id, existing.version)
        return registry.describe_version(settings, existing)
    gate = gates.staging_gate(
        evaluation["candidate"],
        evaluation["champion"],
        bool(evaluation["behaviour"]["passed"]),
        settings,
    )
    version = _log_and_register(settings, model_dir, training_set_dir, run_id)
    tags = _lineage_tags(
        manifest, trained, evaluation, request_id, run_id, kfp_run_id, airflow_run_id
    )
    tags[DRIFT_REFERENCE_TAG] = _log_drift_reference(settings, model_dir, training_set_dir, run_id)
    tags.update({"gate.staging": "passed" if gate.passed else "failed"})
    tags.update({"gate.reasons": gate.reason})
    registry.tag_version(settings, version, tags)
    if gate.passed:
        registry.set_alias(settings, registry.STAGING, version)
    else:
        log.warning("version %s stays without alias: %s", version, gate.reason)
    return {
        "model_name": settings.model_name,
        "version": version,
        "alias": registry.STAGING if gate.passed else "",
        "gate_passed": gate.passed,
        "gate_reasons": gate.reasons,
        "metrics": evaluation["candidate"],
        "champion_metrics": evaluation["champion"],
        "mlflow_run_id": run_id,
    }


def _log_and_register(
    settings: Settings, model_dir: Path, training_set_dir: Path, run_id: str
) -> str:
    """Log the pyfunc into the parent run and register it; return the new version."""
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    with mlflow.start_run(run_id=run_id):
        model_uri = packaging.log_pyfunc(model_dir, load_split(training_set_dir, "holdout"))
    registered = mlflow.register_model(model_uri, settings.model_name)
    return str(registered.version)


def _log_drift_reference(
    settings: Settings, model_dir: Path, training_set_dir: Path, run_id: str
) -> str:
    """Log the drift reference (the model's newest labelled days, scored by it).

    Drift monitoring compares served traffic with the data the model was fitted and
    judged on. The reference is the last ``drift_reference_days`` days of the training
    set (all splits): a whole week holds the weekly rhythm of spending (a single day
    compared with a weekday reference drifts every weekend), and the newest days have
    complete look-back features (7 and 14 days), unlike the first days of a window that
    starts with the data. The sample travels with the version, so any monitor can fetch
    it from MLflow; returns its ``runs:/`` URI.
    """
    import tempfile

    import pandas as pd

    from driftline.training.trainer import TrainedModel

    frame = pd.concat(
        [load_split(training_set_dir, split).assign(split=split) for split in SPLITS],
        ignore_index=True,
    )
    days = frame["event_timestamp"].dt.date
    newest = sorted(days.unique())[-settings.drift_reference_days :]
    recent = frame[days.isin(newest)]
    if len(recent) > settings.drift_reference_max_rows:
        recent = recent.sample(n=settings.drift_reference_max_rows, random_state=0)
    # transaction_id and event_timestamp let monitoring relabel the reference like the
    # served check and split it into days (threshold calibration, post-drift days);
    # user_id and merchant_id group its rows into fraud campaigns for the cluster
    # bootstrap (core.evidence.row_groups).
    keys = ("transaction_id", "event_timestamp", "user_id", "merchant_id")
    columns = [c for c in keys if c in recent.columns]
    reference = recent[[*columns, *MODEL_INPUTS, LABEL, "split"]].reset_index(drop=True)
    reference["score"] = TrainedModel.load(model_dir).predict_proba(reference[list(MODEL_INPUTS)])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / DRIFT_REFERENCE_FILE
        reference.to_parquet(path, index=False)
        registry.client(settings).log_artifact(run_id, str(path), DRIFT_REFERENCE_DIR)
    return f"runs:/{run_id}/{DRIFT_REFERENCE_DIR}/{DRIFT_REFERENCE_FILE}"


def _lineage_tags(
    manifest: dict[str, Any],
    trained: dict[str, Any],
    evaluation: dict[str, Any],
    request_id: str,
    run_id: str,
    kfp_run_id: str,
    airflow_run_id: str,
) -> dict[str, Any]:
    """Every lineage tag a registered version carries (see docs/architecture.md)."""
    champion = evaluation["champion"] or {}
    tags: dict[str, Any] = {
        "request_id": request_id,
        "data_interval": manifest["window"],
        "label_cutoff": manifest["label_cutoff"],
        "data_version": manifest["data_version"],
        "feast_feature_service": manifest["feature_service"],
        "feast_feature_service_version": manifest["feature_service_version"],
        "git_commit": registry.git_commit(),
        "kfp_run_id": kfp_run_id or "none",
        "airflow_run_id": airflow_run_id or "none",
        "mlflow_run_id": run_id,
        "optuna_study": trained["study"],
        "optuna_trial": trained["trial"],
        "model_family": trained["config"]["family"],
        "train_device": trained["device"],
        "champion.version": champion.get("version", "none"),
    }
    for key in ("pr_auc", "roc_auc", "recall_at_fpr", "brier", "score_psi_vs_champion"):
        if key in evaluation["candidate"]:
            tags[f"candidate.{key}"] = f"{evaluation['candidate'][key]:.6f}"
        if key in champion:
            tags[f"champion.{key}"] = f"{champion[key]:.6f}"
    return tags


def evaluate_registered(
    window: Interval, version: str, out_dir: Path, settings: Settings
) -> dict[str, Any]:
    """Evaluate a *registered* version on the recent holdout of ``window``.

    Loads ``models:/<name>/<version>`` exactly as serving would (pyfunc with the saved
    preprocessing), rebuilds the window's training set, and writes ``metrics.json``,
    ``pr_curve.csv`` / ``calibration.csv`` (for ``dvc plots``) and the PNGs to
    ``out_dir``.
    """
    from driftline.training.evaluate import score_metrics, write_curves

    build_training_set(window, out_dir / "training_set", settings)
    holdout = load_split(out_dir / "training_set", "holdout")
    model = packaging.load_version(settings, version)
    scores = packaging.predict_frame(model, holdout)
    metrics = score_metrics(holdout[LABEL].to_numpy(), scores)
    write_curves(holdout[LABEL].to_numpy(), scores, out_dir)
    result = {"model_name": settings.model_name, "version": version, **metrics}
    (out_dir / "metrics.json").write_text(json.dumps(result, indent=2, sort_keys=True))
    return result
