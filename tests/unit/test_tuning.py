"""Tests of driftline.training.tuning: pruning, shared journal studies, MLflow child runs.

Real components at small scale: Optuna on a journal file in a temporary folder, torch on
CPU with a few thousand synthetic rows and at most 3 epochs, MLflow on SQLite.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from driftline.core.settings import Settings
from driftline.training.model import ModelConfig
from driftline.training.tuning import (
    best_config,
    load_study,
    log_study_summary,
    open_storage,
    suggest_config,
    summarize_study,
    tune,
)
from tests.frames import model_frame

#: Clearly good settings, and the same network with a learning rate far too small.
GOOD: dict[str, Any] = {
    "family": "mlp",
    "width": 32,
    "depth": 1,
    "embedding_dim": 4,
    "dropout": 0.0,
    "lr": 1e-2,
    "weight_decay": 1e-6,
    "batch_size": 256,
    "pos_weight": 5.0,
}
BAD = GOOD | {"lr": 1e-5}

WORKER = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    from driftline.training.tuning import tune

    data, storage, name, n_trials, worker = sys.argv[1:]
    summary = tune(
        name,
        pd.read_parquet(f"{data}/train.parquet"),
        pd.read_parquet(f"{data}/valid.parquet"),
        n_trials=int(n_trials),
        storage_url=storage,
        seed=0,
        max_epochs=2,
        worker=int(worker),
        device="cpu",
    )
    print(json.dumps(summary))
    """
)


@pytest.fixture(scope="module")
def splits() -> tuple[pd.DataFrame, pd.DataFrame]:
    """Small train and validation frames (5% fraud so validation has ~50 positives)."""
    return model_frame(2000, seed=1, fraud_rate=0.05), model_frame(1000, seed=2, fraud_rate=0.05)


@pytest.fixture
def data_dir(tmp_path: Path, splits: tuple[pd.DataFrame, pd.DataFrame]) -> Path:
    """The splits as Parquet, for worker processes."""
    folder = tmp_path / "data"
    folder.mkdir()
    splits[0].to_parquet(folder / "train.parquet")
    splits[1].to_parquet(folder / "valid.parquet")
    return folder


def _worker(data: Path, storage: str, name: str, n_trials: int, worker: int, script: Path) -> Any:
    """Start a worker process calling ``tune`` (a script file, not ``python -c``)."""
    if not script.exists():
        script.write_text(WORKER)
    return subprocess.Popen(
        [sys.executable, str(script), str(data), storage, name, str(n_trials), str(worker)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(process: Any) -> dict[str, Any]:
    """Wait for a worker and return the summary it printed."""
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-3000:]
    return dict(json.loads(out.strip().splitlines()[-1]))


def _enqueue_good_good_bad(study: optuna.Study) -> None:
    study.enqueue_trial(GOOD)
    study.enqueue_trial(GOOD | {"lr": 3e-3})
    study.enqueue_trial(BAD)


def test_open_storage_journal_file_creates_parent_folders(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "optuna" / "journal.log"
    storage = open_storage(str(path))
    assert isinstance(storage, optuna.storages.JournalStorage)
    optuna.create_study(storage=storage, study_name="s")
    assert path.exists()


def test_open_storage_sqlite_is_rdb_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="driftline.training.tuning"):
        storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert "not safe for parallel workers" in caplog.text


def test_suggest_config_samples_valid_configs_of_both_families() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    configs = []
    for _ in range(60):
        trial = study.ask()
        configs.append(suggest_config(trial, max_epochs=4))
        study.tell(trial, 0.0)
    assert {c.family for c in configs} == {"mlp", "dcn"}
    assert all(c.max_epochs == 4 for c in configs)
    assert all(c.cross_layers >= 1 for c in configs if c.family == "dcn")
    lrs = [c.lr for c in configs]
    assert min(lrs) < 1e-4 and max(lrs) > 3e-2  # wide enough for bad values to exist
    dcn = next(t for t in study.trials if t.params["family"] == "dcn")
    mlp = next(t for t in study.trials if t.params["family"] == "mlp")
    assert "cross_layers" in dcn.params and "cross_layers" not in mlp.params


def test_median_pruner_prunes_a_bad_trial_and_best_config_rebuilds_the_winner(
    tmp_path: Path, splits: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    storage = str(tmp_path / "journal.log")
    _enqueue_good_good_bad(load_study("prune", storage, seed=0))

    summary = tune("prune", *splits, n_trials=3, storage_url=storage, seed=0, max_epochs=3)

    study = load_study("prune", storage, seed=0)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]
    bad = study.trials[2]
    assert bad.params["lr"] == BAD["lr"]
    assert sorted(bad.intermediate_values) == [0, 1]  # epoch 0 is warm-up; pruned at 1
    assert (summary["n_complete"], summary["n_pruned"], summary["n_failed"]) == (2, 1, 0)
    assert summary["best_trial"] in (0, 1)
    assert summary["best_value"] == pytest.approx(study.best_value)
    assert summary["best_value"] > 0.3  # far above the 5% base rate
    assert summary["importances"] or summary["importance_error"]
    json.dumps(summary)  # serialisable as the tuning artifact

    config = best_config(study, max_epochs=7)
    expected = GOOD | study.best_params
    assert config == ModelConfig(
        family="mlp",
        hidden=(32,),
        embedding_dim=4,
        cross_layers=0,
        dropout=0.0,
        lr=expected["lr"],
        weight_decay=1e-6,
        batch_size=256,
        max_epochs=7,
        pos_weight=5.0,
    )


def test_summarize_study_explains_missing_importances(tmp_path: Path) -> None:
    study = load_study("empty", str(tmp_path / "journal.log"), seed=0, pruner="none")
    summary = summarize_study(study)
    assert summary["n_trials"] == 0
    assert summary["best_value"] is None and summary["best_params"] is None
    assert summary["importances"] == {}
    assert "at least 2 complete trials" in summary["importance_error"]
    with pytest.raises(ValueError):
        best_config(study, max_epochs=3)


def test_second_process_resumes_the_study(
    tmp_path: Path,
    settings: Settings,
    splits: tuple[pd.DataFrame, pd.DataFrame],
    data_dir: Path,
) -> None:
    storage = settings.optuna_storage  # the default: a journal file under DRIFTLINE_HOME
    first = tune("resume", *splits, n_trials=2, storage_url=storage, seed=0, max_epochs=2)
    before = load_study("resume", storage, seed=0).trials

    # Same worker index and seed, as a retried worker would have.
    summary = _wait(_worker(data_dir, storage, "resume", 2, 0, tmp_path / "worker.py"))

    after = load_study("resume", storage, seed=0).trials
    assert first["n_trials"] == 2
    assert summary["n_trials"] == len(after) == 4
    assert [t.number for t in after] == [0, 1, 2, 3]
    for old, new in zip(before, after[:2], strict=True):
        assert (old.params, old.value, old.state) == (new.params, new.value, new.state)
    assert all(t.state.is_finished() for t in after)
    # The resumed worker draws new configurations instead of replaying the first ones.
    assert len({tuple(sorted(t.params.items())) for t in after}) == 4


def test_concurrent_workers_share_one_study(tmp_path: Path, data_dir: Path) -> None:
    storage = str(tmp_path / "optuna" / "journal.log")
    script = tmp_path / "worker.py"
    workers = [_worker(data_dir, storage, "fanout", 3, index, script) for index in (0, 1)]
    summaries = [_wait(process) for process in workers]

    trials = load_study("fanout", storage, seed=0).trials
    assert sorted(t.number for t in trials) == list(range(6))
    assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
    # Different worker indices seed the samplers differently: no duplicated configs.
    assert len({tuple(sorted(t.params.items())) for t in trials}) == 6
    assert max(s["n_trials"] for s in summaries) == 6


def test_trials_are_logged_as_mlflow_child_runs(
    tmp_path: Path, splits: tuple[pd.DataFrame, pd.DataFrame]
) -> None:
    from mlflow import MlflowClient

    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri)
    experiment_id = client.create_experiment(
        "tuning", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    parent = client.create_run(experiment_id, run_name="tune").info.run_id
    storage = str(tmp_path / "journal.log")
    _enqueue_good_good_bad(load_study("tracked", storage, seed=0))

    summary = tune(
        "tracked",
        *splits,
        n_trials=3,
        storage_url=storage,
        seed=0,
        max_epochs=3,
        tracking_uri=tracking_uri,
        parent_run_id=parent,
    )
    log_study_summary(summary, tracking_uri=tracking_uri, run_id=parent)

    children = client.search_runs(
        [experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent}'"
    )
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in children}
    assert sorted(by_trial) == [0, 1, 2]
    assert [by_trial[i].data.tags["optuna.state"] for i in range(3)] == [
        "COMPLETE",
        "COMPLETE",
        "PRUNED",
    ]
    assert [by_trial[i].info.status for i in range(3)] == ["FINISHED", "FINISHED", "KILLED"]
    assert by_trial[2].data.params["lr"] == str(BAD["lr"])
    history = client.get_metric_history(by_trial[0].info.run_id, "valid_pr_auc")
    assert [m.step for m in history] == [0, 1, 2]
    pruned = client.get_metric_history(by_trial[2].info.run_id, "valid_pr_auc")
    assert [m.step for m in pruned] == [0, 1]

    run = client.get_run(parent)
    assert run.data.tags["best.lr"] == str(summary["best_params"]["lr"])
    assert run.data.metrics["best_valid_pr_auc"] == pytest.approx(summary["best_value"])
    assert run.data.metrics["trials_pruned"] == 1
    assert [a.path for a in client.list_artifacts(parent, "tuning")] == [
        "tuning/study_summary.json"
    ]
    # A resumed study may find a new best: logging it again replaces the old one.
    moved = {**summary, "best_params": {**summary["best_params"], "lr": 0.123}}
    log_study_summary(moved, tracking_uri=tracking_uri, run_id=parent)
    assert client.get_run(parent).data.tags["best.lr"] == "0.123"
