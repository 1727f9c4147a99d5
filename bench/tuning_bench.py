"""Tuning efficiency: the same Optuna study budget with median pruning vs without pruning.

Two studies grow side by side in this process, on the same data, with the same number of
trials, the same seed and the same search space
(:func:`driftline.training.tuning.tune`), each on a fresh journal file in a temporary
folder:

* ``no_pruning`` (the baseline): ``NopPruner``, every trial trains until early stopping
  or ``--max-epochs``;
* ``median_pruning``: ``MedianPruner(n_startup_trials=2, n_warmup_steps=1)``.

The studies take turns, one trial each (one ``tune(n_trials=1)`` call, which resumes the
study from its journal), so both see the same machine conditions. The sampler seed of a
call depends only on the seed and the study's trial count, so the random start-up trials
(TPE's first 10) draw the same configurations in both studies; later trials can diverge
because pruned trials feed back into TPE. For each study the benchmark records wall and
CPU time of the ``tune`` calls, the summed trial durations, trials complete / pruned /
failed, epochs trained (the resource pruning saves; unlike time, it does not depend on
the machine), the best validation PR-AUC and, when a holdout split is present, the
holdout PR-AUC of the best trial's model (retrained with the trial's seed, which
reproduces it exactly on CPU). Ratios compare pruning with the baseline.

A CPU-vs-GPU section times one training epoch of the default ``ModelConfig`` on each
device; it runs only when ``torch.cuda.is_available()``.

Input: ``--training-set DIR`` holding ``train.parquet``, ``valid.parquet`` (and
optionally ``holdout.parquet``) with model-frame columns, as the training-set builder
writes them (default ``.driftline/training_set``), or ``--synthetic N`` for N synthetic
labelled rows split 60/20/20 by time.

Usage::

    python bench/tuning_bench.py [--training-set DIR | --synthetic 20000] [--trials 12]
                                 [--max-epochs 10] [--seed 7] [--out bench/results/tuning.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
import torch
from bench_common import host

from driftline.core.columns import LABEL
from driftline.training.evaluate import score_metrics
from driftline.training.model import ModelConfig
from driftline.training.synthetic import model_frame
from driftline.training.trainer import train_model
from driftline.training.tuning import PrunerName, best_config, load_study, tune

BASELINE = "no_pruning"
CANDIDATE = "median_pruning"
PRUNERS: dict[str, PrunerName] = {BASELINE: "none", CANDIDATE: "median"}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "tuning.json"
DEFAULT_TRAINING_SET = Path(".driftline") / "training_set"


# --------------------------------------------------------------------------------------
# Input data
# --------------------------------------------------------------------------------------


def synthetic_frame(n: int, seed: int) -> pd.DataFrame:
    """``n`` synthetic labelled rows (:mod:`driftline.training.synthetic`), 5,000 users."""
    return model_frame(n, seed, users=5000, merchants=2000, days=28)


def synthetic_splits(n: int, seed: int) -> dict[str, pd.DataFrame]:
    """Split :func:`synthetic_frame` by time: oldest 60% train, then 20% valid, 20% holdout."""
    frame = synthetic_frame(n, seed)  # already ordered by event_timestamp
    a, b = int(n * 0.6), int(n * 0.8)
    return {
        "train": frame.iloc[:a].reset_index(drop=True),
        "valid": frame.iloc[a:b].reset_index(drop=True),
        "holdout": frame.iloc[b:].reset_index(drop=True),
    }


def read_splits(folder: Path) -> dict[str, pd.DataFrame]:
    """Read ``train``/``valid`` (required) and ``holdout`` (optional) Parquet splits."""
    splits: dict[str, pd.DataFrame] = {}
    for name in ("train", "valid", "holdout"):
        path = folder / f"{name}.parquet"
        if path.exists():
            splits[name] = pd.read_parquet(path)
        elif name != "holdout":
            raise SystemExit(f"{path} not found: build a training set first or pass --synthetic N")
    return splits


def describe_data(splits: dict[str, pd.DataFrame]) -> dict[str, Any]:
    """Rows and positives per split."""
    return {
        name: {"rows": len(frame), "positives": int(frame[LABEL].sum())}
        for name, frame in splits.items()
    }


# --------------------------------------------------------------------------------------
# Studies
# --------------------------------------------------------------------------------------


def trial_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """One row per trial: state, value, epochs trained, seconds."""
    rows = []
    for t in study.trials:
        seconds = (
            (t.datetime_complete - t.datetime_start).total_seconds()
            if t.datetime_complete and t.datetime_start
            else None
        )
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "value": t.value,
                "epochs": len(t.intermediate_values),
                "seconds": None if seconds is None else round(seconds, 3),
                "family": t.params.get("family"),
                "lr": t.params.get("lr"),
            }
        )
    return rows


def holdout_pr_auc(
    study: optuna.Study, splits: dict[str, pd.DataFrame], *, seed: int, max_epochs: int
) -> float | None:
    """Holdout PR-AUC of the best trial's model, retrained exactly as in its trial."""
    if "holdout" not in splits:
        return None
    config = best_config(study, max_epochs=max_epochs)
    model = train_model(
        config,
        splits["train"],
        splits["valid"],
        seed=seed + study.best_trial.number,
        device="cpu",
    )
    scores = model.predict_proba(splits["holdout"])
    return float(score_metrics(splits["holdout"][LABEL].to_numpy(), scores)["pr_auc"])


def time_trial(
    label: str, splits: dict[str, pd.DataFrame], storage: str, args: argparse.Namespace
) -> tuple[dict[str, Any], float, float]:
    """Add one trial to study ``label`` with :func:`tune`: summary, wall and CPU seconds.

    CPU seconds (this process, all threads) complement wall time on a shared machine.
    """
    start, cpu_start = time.perf_counter(), time.process_time()
    summary = tune(
        label,
        splits["train"],
        splits["valid"],
        n_trials=1,
        storage_url=storage,
        seed=args.seed,
        max_epochs=args.max_epochs,
        pruner=PRUNERS[label],
        device="cpu",
    )
    return summary, time.perf_counter() - start, time.process_time() - cpu_start


def describe_study(
    label: str,
    storage: str,
    summary: dict[str, Any],
    timing: dict[str, float],
    splits: dict[str, pd.DataFrame],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Counts, best values, timings, per-trial rows and holdout PR-AUC of a finished study."""
    study = load_study(label, storage, seed=args.seed, pruner=PRUNERS[label])
    trials = trial_rows(study)
    holdout = (
        holdout_pr_auc(study, splits, seed=args.seed, max_epochs=args.max_epochs)
        if summary["n_complete"]
        else None
    )
    return {
        "pruner": PRUNERS[label],
        "wall_s": round(timing["wall_s"], 3),
        "cpu_s": round(timing["cpu_s"], 3),
        "trial_s": round(sum(t["seconds"] or 0.0 for t in trials), 3),
        "trials": summary["n_trials"],
        "complete": summary["n_complete"],
        "pruned": summary["n_pruned"],
        "failed": summary["n_failed"],
        "epochs_trained": sum(t["epochs"] for t in trials),
        "best_valid_pr_auc": summary["best_value"],
        "best_trial": summary["best_trial"],
        "best_params": summary["best_params"],
        "best_holdout_pr_auc": holdout,
        "importances": summary["importances"],
        "per_trial": trials,
    }


def run_studies(
    splits: dict[str, pd.DataFrame], folder: Path, args: argparse.Namespace
) -> dict[str, dict[str, Any]]:
    """Grow both studies one trial at a time, alternating which goes first.

    Interleaving exposes both studies to the same machine conditions (a shared machine's
    speed drifts over minutes); each step is a separate :func:`tune` call resuming its
    study from its journal, as a pipeline worker would.
    """
    storages = {label: str(folder / f"{label}.journal") for label in PRUNERS}
    timing = {label: {"wall_s": 0.0, "cpu_s": 0.0} for label in PRUNERS}
    summaries: dict[str, dict[str, Any]] = {}
    for number in range(args.trials):
        print(f"trial {number + 1}/{args.trials} of each study ...", flush=True)
        order = list(PRUNERS) if number % 2 == 0 else list(reversed(PRUNERS))
        for label in order:
            summary, wall_s, cpu_s = time_trial(label, splits, storages[label], args)
            summaries[label] = summary
            timing[label]["wall_s"] += wall_s
            timing[label]["cpu_s"] += cpu_s
    return {
        label: describe_study(label, storages[label], summaries[label], timing[label], splits, args)
        for label in PRUNERS
    }


def warm_up(splits: dict[str, pd.DataFrame], seed: int) -> float:
    """Train once, untimed, so lazy imports and first-call costs hit neither study.

    Without it the first study measured here paid about 3 s more than the second for
    identical trials.
    """
    start = time.perf_counter()
    train_model(ModelConfig(max_epochs=1), splits["train"], splits["valid"], seed=seed)
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------
# CPU vs GPU
# --------------------------------------------------------------------------------------


def one_epoch_seconds(splits: dict[str, pd.DataFrame], device: str, seed: int) -> float:
    """Seconds of ``train_model`` for one epoch of the default config on ``device``."""
    config = ModelConfig(max_epochs=1)
    start = time.perf_counter()
    train_model(config, splits["train"], splits["valid"], seed=seed, device=device)
    return time.perf_counter() - start


def cpu_vs_gpu(splits: dict[str, pd.DataFrame], seed: int) -> dict[str, Any]:
    """One-epoch training time on CPU and on CUDA (after a CUDA warm-up run)."""
    if not torch.cuda.is_available():
        return {"available": False, "reason": "no GPU (torch.cuda.is_available() is False)"}
    print("cpu vs gpu, one epoch each ...", flush=True)
    one_epoch_seconds(splits, "cuda", seed)  # CUDA context, kernels, allocator
    gpu_s = one_epoch_seconds(splits, "cuda", seed)
    cpu_s = one_epoch_seconds(splits, "cpu", seed)
    return {
        "available": True,
        "device_name": torch.cuda.get_device_name(0),
        "config": ModelConfig(max_epochs=1).to_dict(),
        "train_rows": len(splits["train"]),
        "cpu_epoch_s": round(cpu_s, 3),
        "gpu_epoch_s": round(gpu_s, 3),
        "ratio_cpu_over_gpu": round(cpu_s / gpu_s, 3),
        "note": "includes preprocessing and the validation pass; GPU uses float16 autocast",
    }


# --------------------------------------------------------------------------------------
# Report and main
# --------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Where the numbers come from."""
    return host() | {
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "optuna": optuna.__version__,
        "cuda_available": torch.cuda.is_available(),
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded, or ``None`` when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


def print_table(result: dict[str, Any]) -> None:
    """A short human-readable summary of ``result``."""
    studies = result["studies"]
    header = f"{'study':<16}{'wall s':>8}{'cpu s':>8}{'done':>6}{'pruned':>8}{'epochs':>8}"
    header += f"{'best valid':>12}{'holdout':>10}"
    lines = [
        f"tuning bench ({result['data']['source']}), {result['budget']['trials']} trials, "
        f"up to {result['budget']['max_epochs']} epochs, seed {result['budget']['seed']}",
        header,
    ]
    for name, s in studies.items():
        holdout = "-" if s["best_holdout_pr_auc"] is None else f"{s['best_holdout_pr_auc']:.4f}"
        best = "-" if s["best_valid_pr_auc"] is None else f"{s['best_valid_pr_auc']:.4f}"
        lines.append(
            f"{name:<16}{s['wall_s']:>8.1f}{s['cpu_s']:>8.1f}{s['complete']:>6}{s['pruned']:>8}"
            f"{s['epochs_trained']:>8}{best:>12}{holdout:>10}"
        )
    r = result["ratios"]
    lines.append(
        f"wall time no-prune/prune: {r['wall_time_no_prune_over_prune']}x, "
        f"cpu time: {r['cpu_time_no_prune_over_prune']}x, "
        f"trial time: {r['trial_time_no_prune_over_prune']}x, "
        f"epochs no-prune/prune: {r['epochs_no_prune_over_prune']}x, "
        f"best valid PR-AUC prune/no-prune: {r['best_valid_pr_auc_prune_over_no_prune']}, "
        f"holdout: {r['best_holdout_pr_auc_prune_over_no_prune']}"
    )
    gpu = result["cpu_vs_gpu"]
    if gpu["available"]:
        lines.append(
            f"one epoch: cpu {gpu['cpu_epoch_s']:.2f}s, gpu {gpu['gpu_epoch_s']:.2f}s "
            f"({gpu['ratio_cpu_over_gpu']}x)"
        )
    else:
        lines.append(f"cpu vs gpu: {gpu['reason']}")
    print("\n".join(lines))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(description="Optuna tuning: median pruning vs none.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--training-set",
        type=Path,
        default=DEFAULT_TRAINING_SET,
        help="Folder with train/valid(/holdout).parquet (default .driftline/training_set).",
    )
    source.add_argument(
        "--synthetic", type=int, default=None, metavar="N", help="Use N synthetic rows instead."
    )
    parser.add_argument("--trials", type=int, default=20, help="Trials per study.")
    parser.add_argument("--max-epochs", type=int, default=10, help="Epoch budget per trial.")
    parser.add_argument("--seed", type=int, default=7, help="Sampler, training and data seed.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file.")
    args = parser.parse_args(argv)
    if min(args.trials, args.max_epochs) < 1:
        parser.error("--trials and --max-epochs must be positive")
    if args.synthetic is not None and args.synthetic < 100:
        parser.error("--synthetic needs at least 100 rows")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run both studies (and the GPU section when possible), write JSON, print a table."""
    args = parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.synthetic is not None:
        splits = synthetic_splits(args.synthetic, args.seed)
        source = f"synthetic ({args.synthetic:,} rows)"
    else:
        splits = read_splits(args.training_set)
        source = str(args.training_set)
    load_at_start = round(os.getloadavg()[0], 2)
    print("warm-up (one untimed training run) ...", flush=True)
    warmup_s = warm_up(splits, args.seed)
    with tempfile.TemporaryDirectory(prefix="driftline-tuning-bench-") as tmp:
        studies = run_studies(splits, Path(tmp), args)
    base, cand = studies[BASELINE], studies[CANDIDATE]
    result: dict[str, Any] = {
        "benchmark": "tuning_efficiency",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "baseline": BASELINE,
        "machine": machine_info() | {"load_average_1m_at_start": load_at_start},
        "data": {"source": source, "splits": describe_data(splits)},
        "budget": {
            "trials": args.trials,
            "max_epochs": args.max_epochs,
            "seed": args.seed,
        },
        "warmup_s": round(warmup_s, 3),
        "studies": studies,
        "ratios": {
            "wall_time_no_prune_over_prune": ratio(base["wall_s"], cand["wall_s"]),
            "cpu_time_no_prune_over_prune": ratio(base["cpu_s"], cand["cpu_s"]),
            "trial_time_no_prune_over_prune": ratio(base["trial_s"], cand["trial_s"]),
            "epochs_no_prune_over_prune": ratio(base["epochs_trained"], cand["epochs_trained"]),
            "best_valid_pr_auc_prune_over_no_prune": ratio(
                cand["best_valid_pr_auc"], base["best_valid_pr_auc"]
            ),
            "best_holdout_pr_auc_prune_over_no_prune": ratio(
                cand["best_holdout_pr_auc"], base["best_holdout_pr_auc"]
            ),
        },
        "ratio_definition": (
            "wall, CPU, trial time and epochs: baseline (no pruning) over median pruning, "
            "above 1 means pruning is faster; PR-AUC: pruning over baseline, below 1 means "
            "pruning found a worse best model within the same trial budget."
        ),
        "cpu_vs_gpu": cpu_vs_gpu(splits, args.seed),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
