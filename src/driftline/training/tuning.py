"""Hyper-parameter search with Optuna: one study, many workers, MLflow child runs.

A study lives in shared Optuna storage (:func:`open_storage`): a journal file by default
(``Settings.optuna_storage``; the storage Optuna recommends for several processes on one
machine or on NFS) or a database URL. Workers are plain processes that each call
:func:`tune` with the same study name and storage; every call adds ``n_trials`` trials
to the study, so a pipeline fans out by starting several such calls, and a rerun resumes
where the study stands.

Each trial trains one model (:func:`~driftline.training.trainer.train_model`) from the
search space of :func:`suggest_config`, reports the validation PR-AUC after every epoch
and is pruned when the study's pruner says so. With a tracking URI and a parent run the
trial is also an MLflow child run of that parent. :func:`summarize_study` and
:func:`log_study_summary` describe the finished study; :func:`best_config` rebuilds the
winning :class:`~driftline.training.model.ModelConfig`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import optuna
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

from driftline.training.model import ModelConfig
from driftline.training.trainer import train_model

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

PrunerName = Literal["median", "hyperband", "none"]

#: URL schemes opened with :class:`optuna.storages.RDBStorage`.
DB_SCHEMES: tuple[str, ...] = ("postgresql", "mysql", "sqlite")
#: Widths of the first hidden layer; later layers halve it (not below
#: :data:`MIN_WIDTH`).
WIDTHS: tuple[int, ...] = (32, 64, 128, 256)
MIN_WIDTH = 16
#: Exceptions that fail one trial (recorded as FAIL) without stopping the worker.
TRIAL_ERRORS: tuple[type[Exception], ...] = (RuntimeError, ValueError, FloatingPointError)
#: MLflow tag holding the trial's final Optuna state.
STATE_TAG = "optuna.state"
MLFLOW_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}


# --------------------------------------------------------------------------------------
# Storage, search space, study
# --------------------------------------------------------------------------------------


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """Open Optuna storage from a database URL or a journal file path.

    Args:
        url: ``postgresql://...``, ``mysql://...`` (also ``mysql+pymysql://...``) or
            ``sqlite:///...`` for :class:`~optuna.storages.RDBStorage`; anything else is
            a file path for a journal file (its parent folders are created).

    Returns:
        The storage. SQLite is accepted but logged as unsafe for parallel workers (Optuna
        documents lock contention and failures there); use the journal file instead.
    """
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else ""
    if scheme in DB_SCHEMES:
        if scheme == "sqlite":
            log.warning(
                "Optuna on SQLite (%s) is not safe for parallel workers; "
                "use a journal file or a server database for concurrent tuning",
                url,
            )
        return optuna.storages.RDBStorage(url)
    path = Path(url).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


def _hidden(width: int, depth: int) -> tuple[int, ...]:
    """Funnel of ``depth`` layers starting at ``width`` and halving, floored at 16."""
    return tuple(max(width // 2**i, MIN_WIDTH) for i in range(depth))


def suggest_config(trial: optuna.trial.BaseTrial, *, max_epochs: int) -> ModelConfig:
    """Sample one :class:`ModelConfig` from the search space.

    The space (parameter names are what Optuna records):

    * ``family``: ``mlp`` or ``dcn``; ``cross_layers`` 1-4 only for ``dcn``;
    * ``lr``: log-uniform 1e-5..3e-1 -- wide on purpose, both ends train badly, which is
      what the pruner is for;
    * ``width`` (32/64/128/256) and ``depth`` (1-3): hidden layers halve from ``width``;
    * ``dropout`` 0-0.5, ``embedding_dim`` 4/8/16, ``weight_decay`` log 1e-7..1e-3,
      ``batch_size`` 256/512/1024;
    * ``pos_weight``: log-uniform 1-30, the positive-class loss weight (at a 1-3% fraud
      rate the derived default, ``sqrt(neg/pos)``, is about 6-10).

    ``max_epochs`` is fixed by the caller, not searched.

    Args:
        trial: A live trial or an :class:`optuna.trial.FixedTrial` (to rebuild a config).
        max_epochs: Epoch budget of every trial (the pruners' resource).
    """
    family = trial.suggest_categorical("family", ["mlp", "dcn"])
    cross_layers = trial.suggest_int("cross_layers", 1, 4) if family == "dcn" else 0
    width = int(trial.suggest_categorical("width", list(WIDTHS)))
    depth = trial.suggest_int("depth", 1, 3)
    return ModelConfig(
        family="dcn" if family == "dcn" else "mlp",
        hidden=_hidden(width, depth),
        embedding_dim=int(trial.suggest_categorical("embedding_dim", [4, 8, 16])),
        cross_layers=cross_layers,
        dropout=trial.suggest_float("dropout", 0.0, 0.5),
        lr=trial.suggest_float("lr", 1e-5, 3e-1, log=True),
        weight_decay=trial.suggest_float("weight_decay", 1e-7, 1e-3, log=True),
        batch_size=int(trial.suggest_categorical("batch_size", [256, 512, 1024])),
        max_epochs=max_epochs,
        pos_weight=trial.suggest_float("pos_weight", 1.0, 30.0, log=True),
    )


def make_pruner(pruner: PrunerName, *, max_epochs: int | None = None) -> optuna.pruners.BasePruner:
    """Build the named pruner.

    ``median``: prune below the median of earlier trials at the same epoch, after 2
    finished trials and from the second epoch on. ``hyperband``: epochs are the resource,
    1 to ``max_epochs`` (``"auto"`` when unknown). ``none``: never prune.
    """
    if pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    if pruner == "hyperband":
        resource: int | str = max_epochs if max_epochs is not None else "auto"
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=resource)
    if pruner == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {pruner!r}; expected median, hyperband or none")


def load_study(
    name: str,
    storage_url: str,
    *,
    seed: int,
    pruner: PrunerName = "median",
    max_epochs: int | None = None,
) -> optuna.Study:
    """Create the study, or load it when it exists (safe when workers race to create it).

    Args:
        name: Study name.
        storage_url: See :func:`open_storage`.
        seed: Seed of the TPE sampler.
        pruner: See :func:`make_pruner`.
        max_epochs: Hyperband's maximum resource (per-trial epoch budget).

    Returns:
        A study maximising validation PR-AUC.
    """
    return optuna.create_study(
        study_name=name,
        storage=open_storage(storage_url),
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=make_pruner(pruner, max_epochs=max_epochs),
        direction="maximize",
        load_if_exists=True,
    )


# --------------------------------------------------------------------------------------
# MLflow child runs
# --------------------------------------------------------------------------------------


@dataclass
class _Tracker:
    """Logs each trial of this worker as an MLflow child run of ``parent_run_id``."""

    client: MlflowClient
    experiment_id: str
    parent_run_id: str | None
    study_name: str
    run_ids: dict[int, str] = field(default_factory=dict)

    @classmethod
    def connect(
        cls,
        tracking_uri: str,
        *,
        experiment_id: str | None,
        parent_run_id: str | None,
        study_name: str,
    ) -> _Tracker:
        """Client on ``tracking_uri``; the experiment is the given one or the parent run's."""
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri)
        if experiment_id is None:
            if parent_run_id is None:
                raise ValueError("MLflow trial runs need an experiment_id or a parent_run_id")
            experiment_id = client.get_run(parent_run_id).info.experiment_id
        return cls(client, experiment_id, parent_run_id, study_name)

    def start(self, trial: optuna.Trial, config: ModelConfig) -> None:
        """Create the trial's run and log the sampled and resulting parameters."""
        from mlflow.entities import Param

        tags = {"optuna.study": self.study_name, "optuna.trial": str(trial.number)}
        if self.parent_run_id is not None:
            tags["mlflow.parentRunId"] = self.parent_run_id
        run = self.client.create_run(
            self.experiment_id, run_name=f"{self.study_name}-trial-{trial.number}", tags=tags
        )
        self.run_ids[trial.number] = run.info.run_id
        params = {f"optuna_{k}": v for k, v in trial.params.items()} | config.to_dict()
        self.client.log_batch(
            run.info.run_id, params=[Param(k, str(v)) for k, v in sorted(params.items())]
        )

    def epoch(self, trial: optuna.Trial, epoch: int, score: float) -> None:
        """Log the epoch's validation PR-AUC."""
        self.client.log_metric(self.run_ids[trial.number], "valid_pr_auc", score, step=epoch)

    def finish(self, trial: optuna.Trial, state: str, best: float | None = None) -> None:
        """Tag the Optuna state and end the run with the matching MLflow status."""
        run_id = self.run_ids.pop(trial.number, None)
        if run_id is None:
            return
        if best is not None:
            self.client.log_metric(run_id, "best_valid_pr_auc", best)
        self.client.set_tag(run_id, STATE_TAG, state)
        self.client.set_terminated(run_id, status=MLFLOW_STATUS[state])


# --------------------------------------------------------------------------------------
# Objective and tuning loop
# --------------------------------------------------------------------------------------


@dataclass
class _Objective:
    """Train one suggested model per trial; report and prune per epoch."""

    train: pd.DataFrame
    valid: pd.DataFrame
    seed: int
    max_epochs: int
    device: str
    tracker: _Tracker | None
    inputs: Collection[str] | None = None

    def __call__(self, trial: optuna.Trial) -> float:
        """Return the trial's best validation PR-AUC (or raise ``TrialPruned``)."""
        config = suggest_config(trial, max_epochs=self.max_epochs)
        if self.tracker is not None:
            self.tracker.start(trial, config)
        try:
            model = train_model(
                config,
                self.train,
                self.valid,
                seed=self.seed + trial.number,
                device=self.device,
                on_epoch=lambda epoch, score: self._report(trial, epoch, score),
                inputs=self.inputs,
            )
        except optuna.TrialPruned:
            self._finish(trial, "PRUNED")
            raise
        except BaseException:
            self._finish(trial, "FAIL")
            raise
        trial.set_user_attr("best_epoch", model.best_epoch)
        trial.set_user_attr("epochs_run", len(model.history))
        score = model.best_valid_pr_auc
        if not math.isfinite(score):
            self._finish(trial, "FAIL")
            raise FloatingPointError(f"trial {trial.number}: non-finite PR-AUC {score}")
        self._finish(trial, "COMPLETE", score)
        return score

    def _report(self, trial: optuna.Trial, epoch: int, score: float) -> None:
        """Report the epoch to Optuna (and MLflow); prune when the pruner says so."""
        trial.report(score, epoch)
        if self.tracker is not None:
            self.tracker.epoch(trial, epoch, score)
        if trial.should_prune():
            log.info("trial %d pruned at epoch %d (PR-AUC %.4f)", trial.number, epoch, score)
            raise optuna.TrialPruned(f"pruned at epoch {epoch}")

    def _finish(self, trial: optuna.Trial, state: str, best: float | None = None) -> None:
        """End the trial's MLflow run, if any."""
        if self.tracker is not None:
            self.tracker.finish(trial, state, best)


def sampler_seed(seed: int, worker: int, existing_trials: int) -> int:
    """Seed of one :func:`tune` call's TPE sampler.

    A sampler seeded with ``seed`` alone would replay the same random start-up draws on
    every call, so a resumed or retried worker would repeat the configurations its
    predecessor already tried. Mixing in the worker index and the study's trial count
    keeps calls reproducible (same study state, same draws) but distinct.
    """
    mixed = np.random.SeedSequence([seed, worker, existing_trials]).generate_state(1)[0]
    return int(mixed)


def tune(
    study_name: str,
    train: pd.DataFrame,
    valid: pd.DataFrame,
    *,
    n_trials: int,
    storage_url: str,
    seed: int,
    max_epochs: int,
    pruner: PrunerName = "median",
    tracking_uri: str | None = None,
    experiment_id: str | None = None,
    parent_run_id: str | None = None,
    worker: int = 0,
    device: str = "auto",
    inputs: Collection[str] | None = None,
) -> dict[str, Any]:
    """Run ``n_trials`` more trials of a (possibly shared) study in this process.

    Several processes may call this at once with the same ``study_name`` and
    ``storage_url``; Optuna's storage hands out unique trial numbers and every worker's
    sampler sees the others' finished trials.

    Args:
        study_name: Study to create or join.
        train: Labelled training model frame.
        valid: Labelled validation model frame (early stopping and the objective).
        n_trials: Trials this call adds.
        storage_url: Optuna storage (see :func:`open_storage`).
        seed: Base seed. Trial ``k`` trains with ``seed + k``; this call's sampler is
            seeded from ``(seed, worker, trials already in the study)`` (see
            :func:`sampler_seed`).
        max_epochs: Epoch budget per trial.
        pruner: ``median``, ``hyperband`` or ``none``.
        tracking_uri: MLflow tracking URI; trials are logged only with it and with
            ``parent_run_id`` or ``experiment_id``.
        experiment_id: MLflow experiment of the trial runs (default: the parent run's;
            :func:`driftline.lifecycle.registry.experiment_id` finds or creates one).
        parent_run_id: MLflow run the trial runs are children of.
        worker: Index of this worker among concurrent ones. Give each concurrent worker a
            different index: concurrent workers with the same sampler seed draw the same
            random start-up configurations.
        device: Passed to ``train_model`` (``auto``, ``cpu``, ``cuda``).
        inputs: Passed to ``train_model``: the contract columns the models read
            (default: all of ``MODEL_INPUTS``).

    Returns:
        :func:`summarize_study` of the whole study plus ``worker_trials`` (trials this
        call ran) and ``worker_wall_s``.
    """
    if n_trials < 1:
        raise ValueError("n_trials must be positive")
    study = load_study(study_name, storage_url, seed=seed, pruner=pruner, max_epochs=max_epochs)
    existing = len(study.get_trials(deepcopy=False))
    study.sampler = optuna.samplers.TPESampler(seed=sampler_seed(seed, worker, existing))
    tracker = None
    if tracking_uri is not None and (parent_run_id is not None or experiment_id is not None):
        tracker = _Tracker.connect(
            tracking_uri,
            experiment_id=experiment_id,
            parent_run_id=parent_run_id,
            study_name=study_name,
        )
    objective = _Objective(train, valid, seed, max_epochs, device, tracker, inputs)
    start = time.perf_counter()
    study.optimize(objective, n_trials=n_trials, catch=TRIAL_ERRORS)
    wall_s = time.perf_counter() - start
    summary = summarize_study(study)
    summary.update(worker_trials=n_trials, worker_wall_s=wall_s)
    log.info(
        "study %s: %d trials (%d complete, %d pruned, %d failed), best PR-AUC %s",
        study_name,
        summary["n_trials"],
        summary["n_complete"],
        summary["n_pruned"],
        summary["n_failed"],
        summary["best_value"],
    )
    return summary


# --------------------------------------------------------------------------------------
# Study summary
# --------------------------------------------------------------------------------------


def _importances(study: optuna.Study, n_complete: int) -> tuple[dict[str, float], str | None]:
    """fANOVA parameter importances (seeded), or why they could not be computed."""
    if n_complete < 2:
        return {}, f"needs at least 2 complete trials, have {n_complete}"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        values = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (RuntimeError, ValueError) as exc:
        return {}, f"{type(exc).__name__}: {exc}"
    return {k: float(v) for k, v in values.items()}, None


def summarize_study(study: optuna.Study) -> dict[str, Any]:
    """JSON-serialisable description of a study.

    Returns:
        ``study_name``, ``n_trials``, ``n_complete``, ``n_pruned``, ``n_failed``,
        ``n_running`` (other workers' trials in flight), ``best_value``,
        ``best_params``, ``best_trial`` (``None`` for the three without a complete
        trial), ``importances`` (parameter -> normalised fANOVA importance) and
        ``importance_error`` (why importances are empty, else ``None``).
    """
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    n_complete = counts[TrialState.COMPLETE]
    importances, importance_error = _importances(study, n_complete)
    best = study.best_trial if n_complete else None
    return {
        "study_name": study.study_name,
        "n_trials": len(trials),
        "n_complete": n_complete,
        "n_pruned": counts[TrialState.PRUNED],
        "n_failed": counts[TrialState.FAIL],
        "n_running": counts[TrialState.RUNNING],
        "best_value": best.value if best else None,
        "best_params": dict(best.params) if best else None,
        "best_trial": best.number if best else None,
        "importances": importances,
        "importance_error": importance_error,
    }


def best_config(study: optuna.Study, *, max_epochs: int) -> ModelConfig:
    """Rebuild the best trial's :class:`ModelConfig` (with a new epoch budget).

    Raises:
        ValueError: When the study has no complete trial.
    """
    return suggest_config(optuna.trial.FixedTrial(study.best_params), max_epochs=max_epochs)


def log_study_summary(summary: dict[str, Any], *, tracking_uri: str, run_id: str) -> None:
    """Log a :func:`summarize_study` result to an MLflow run.

    Best parameters become tags ``best.<name>`` (tags, not params: MLflow params are
    immutable, and a resumed study may find a new best); the best value the metric
    ``best_valid_pr_auc``; trial counts metrics ``trials_<state>``; importances metrics
    ``importance_<name>``; the whole summary the artifact ``tuning/study_summary.json``.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    client = MlflowClient(tracking_uri)
    now = int(time.time() * 1000)  # clock-ok: MLflow metric record timestamp
    tags = [RunTag(f"best.{k}", str(v)) for k, v in sorted((summary["best_params"] or {}).items())]
    values: dict[str, float] = {
        f"trials_{state}": float(summary[f"n_{state}"])
        for state in ("complete", "pruned", "failed")
    }
    if summary["best_value"] is not None:
        values["best_valid_pr_auc"] = float(summary["best_value"])
    values |= {f"importance_{k}": float(v) for k, v in summary["importances"].items()}
    metrics = [Metric(k, v, now, 0) for k, v in sorted(values.items())]
    client.log_batch(run_id, metrics=metrics, tags=tags)
    client.set_tag(run_id, "optuna.study", summary["study_name"])
    client.log_dict(run_id, summary, "tuning/study_summary.json")
