"""Scenario matrix: does the closed loop decide right, seed by seed and drift by drift?

Each *cell* (a simulator seed and a drift scenario) runs the loop of ``make demo``
itself: ``make demo`` with its own ``DRIFTLINE_HOME`` (under ``--workdir``), a free
``DEMO_PORT``, ``DRIFTLINE_SEED`` and the cell's ``DEMO_DRIFT`` (``DEMO_ROWS`` and
``TRAIN_TRIALS`` / ``TRAIN_WORKERS`` from the options), so the loop, its settings and
its period are exactly the demo's (:mod:`driftline.orchestration.demo`). Cells run one
after the other. Then, in a child process on the cell's state (its lake, Feast store
and MLflow registry), the cell is analysed:

* from the loop's timeline: the days drift was flagged, false drift days (flagged
  before the onset, or at all without drift), the detection delay (first flagged day on
  or after the onset minus the onset), the day a retrain was requested, the days a new
  version was promoted or rejected;
* **old and new champion on the same post-drift labelled days**: the loop's training-set
  builder (:func:`driftline.training.dataset.build_training_set`, Feast point-in-time
  and the fresh features) over the served period gives every served transaction with
  the chargebacks reported by the end of the loop; every registered version is loaded
  from the registry (:func:`driftline.training.packaging.load_version`) and scored on the
  days after the onset that no version trained or early-stopped on (from the newest
  version's holdout day on, labels at least ``label_maturity_days`` old); PR-AUC with
  :func:`driftline.training.evaluate.score_metrics`, the difference with a paired
  bootstrap interval (:func:`driftline.core.evidence.paired_difference_interval`),
  and, from the simulator's ground truth, the recall of each fraud type at the serving
  threshold;
* **fresh against day-old features** on the same pre-drift matured days: two models
  trained from the first model's training set with the same code and the first
  champion's configuration (:func:`driftline.training.trainer.train_model`, once per
  training seed, ``--compare-seeds``), one on every model input, one restricted to
  ``MODEL_INPUTS`` minus ``FRESH_FEATURES`` (``inputs=``), scored on the served days
  before the onset, with the first champion alongside;
* **was the decision right**: no drift: no retrain requested; covariate shift only
  (strong or mild): no version promoted that is worse (lower PR-AUC) than the old
  champion on the post-drift days; new fraud pattern (alone or with the shift): drift
  detected on or after the onset and a new champion promoted that is better there.

The JSON (``--out``) holds one entry per cell under ``cells["SEED/SCENARIO"]`` and is
rewritten after each cell: a rerun skips the cells already in it (``--force`` reruns
them), so the matrix can be filled over several sessions, one cell at a time if need be
(``--seeds 11 --scenarios none``). A cell whose loop finished but whose analysis failed
reuses the loop on the next run (``--reanalyse`` redoes the analysis of cells already
in the JSON from their kept state).

Usage::

    python bench/scenario_matrix.py [--seeds 7,11,23,31,47] \\
        [--scenarios none,covariate_shift,new_fraud_pattern,both,mild_covariate_shift] \\
        [--rows 4000] [--trials 8] [--workers 2] [--compare-seeds 3] \\
        [--workdir /tmp/driftline-scenario-matrix] [--out bench/results/scenario_matrix.json]
    python bench/scenario_matrix.py --table    # the README table of the JSON's cells
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from driftline.core.interval import Interval
    from driftline.core.settings import Settings
    from driftline.training.model import ModelConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "bench" / "results" / "scenario_matrix.json"
DEFAULT_WORKDIR = Path("/tmp/driftline-scenario-matrix")
DEFAULT_SEEDS = (7, 11, 23, 31, 47)
#: Scenario name -> its drift specs (``DEMO_DRIFT``), ``{day}`` the onset.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "none": (),
    "covariate_shift": ("covariate_shift@{day}",),
    "new_fraud_pattern": ("new_fraud_pattern@{day}",),
    "both": ("new_fraud_pattern@{day}", "covariate_shift@{day}"),
    "mild_covariate_shift": ("covariate_shift:0.3@{day}",),
}
#: What each scenario asks of the loop (see :func:`decision`).
RULES = {
    "none": "no retrain requested",
    "covariate_shift": "no promotion of a model worse on the post-drift days",
    "mild_covariate_shift": "no promotion of a model worse on the post-drift days",
    "new_fraud_pattern": "drift detected and a better champion promoted",
    "both": "drift detected and a better champion promoted",
}
#: Settings of the analysis child: ``make demo``'s ``DEMO_ENV`` values that shape
#: training sets (the Makefile is the source; these must stay equal to it).
DEMO_TRAINING_ENV = {
    "DRIFTLINE_LABEL_MATURITY_DAYS": "3",
    "DRIFTLINE_VALID_DAYS": "1",
    "DRIFTLINE_HOLDOUT_DAYS": "1",
}
#: Ground-truth fraud types that are not fraud (the simulator's legitimate rows).
NOT_FRAUD = frozenset({"", "legit", "unknown"})
#: Paired-bootstrap resamples and two-sided level of the PR-AUC differences.
BOOTSTRAP_SAMPLES = 400
CONFIDENCE = 0.9


# --------------------------------------------------------------------------------------
# Cells: the loop
# --------------------------------------------------------------------------------------


def cell_key(seed: int, scenario: str) -> str:
    """The cell's key in the JSON's ``cells``."""
    return f"{seed}/{scenario}"


def drift_specs(scenario: str, onset: date) -> list[str]:
    """``DEMO_DRIFT`` of ``scenario`` starting on ``onset``."""
    return [spec.format(day=onset.isoformat()) for spec in SCENARIOS[scenario]]


def clean_env(home: Path, seed: int) -> dict[str, str]:
    """This process's environment without driftline or Airflow settings, plus the cell's.

    ``make demo`` derives ``AIRFLOW_HOME`` from ``DRIFTLINE_HOME`` only when it is unset,
    and any ``DRIFTLINE_*`` variable here would override a demo default.
    """
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DRIFTLINE_", "AIRFLOW", "MLFLOW_"))
    }
    return {**env, "DRIFTLINE_HOME": str(home), "DRIFTLINE_SEED": str(seed)}


def run_loop(
    home: Path, seed: int, drift: Sequence[str], args: argparse.Namespace
) -> dict[str, Any]:
    """``make demo`` for one cell (it empties ``home`` first); what it took."""
    from driftline.orchestration.processes import free_port, run_child

    port = free_port()
    command = [
        "make",
        "--no-print-directory",
        "-C",
        str(REPO),
        "demo",
        f"DRIFTLINE_HOME={home}",
        f"DEMO_PORT={port}",
        f"DEMO_DRIFT={' '.join(drift)}",
        f"DEMO_ROWS={args.rows}",
        f"TRAIN_TRIALS={args.trials}",
        f"TRAIN_WORKERS={args.workers}",
    ]
    log = home.parent / f"{home.name}.make.log"
    started = time.monotonic()
    code = run_child(command, timeout_s=args.loop_timeout, env=clean_env(home, seed), log_path=log)
    seconds = round(time.monotonic() - started, 1)
    if code != 0:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"make demo failed (exit {code}) for {home}; see {log}:\n{tail}")
    return {"seconds": seconds, "port": port, "log": str(log)}


def analyse_in_child(home: Path, seed: int, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Run :func:`analyse` in a child process on the cell's state; its result."""
    from driftline.orchestration.processes import run_child

    spec_file, result_file = (
        home.parent / f"{home.name}.cell.json",
        home.parent / (f"{home.name}.analysis.json"),
    )
    spec_file.write_text(json.dumps(spec, indent=2) + "\n")
    result_file.unlink(missing_ok=True)
    env = {
        **clean_env(home, seed),
        **DEMO_TRAINING_ENV,
        "DRIFTLINE_DATA_START": spec["start"],
        "DRIFTLINE_SIMULATION_START": spec["start"],
    }
    command = [sys.executable, str(Path(__file__).resolve()), "--analyse", str(spec_file)]
    log = home.parent / f"{home.name}.analysis.log"
    code = run_child(command, timeout_s=3600, env=env, cwd=REPO, log_path=log)
    if code != 0 or not result_file.is_file():
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"analysis failed (exit {code}); see {log}:\n{tail}")
    result: dict[str, Any] = json.loads(result_file.read_text())
    return result


def run_cell(seed: int, scenario: str, args: argparse.Namespace, reuse: bool) -> dict[str, Any]:
    """One cell: the loop (unless ``reuse`` and it finished before), then its analysis."""
    from driftline.orchestration import demo

    home = args.workdir / f"seed{seed}-{scenario}"
    onset = demo.DRIFT_DAY
    drift = drift_specs(scenario, onset)
    done = home.parent / f"{home.name}.loop.json"
    if reuse and done.is_file() and (home / "demo" / "timeline.json").is_file():
        loop = json.loads(done.read_text())
    else:
        home.parent.mkdir(parents=True, exist_ok=True)
        done.unlink(missing_ok=True)
        loop = run_loop(home, seed, drift, args)
        done.write_text(json.dumps(loop) + "\n")
    spec = {
        "seed": seed,
        "scenario": scenario,
        "drift": drift,
        "onset": onset.isoformat() if drift else None,
        "start": demo.START.isoformat(),
        "train_start": demo.TRAIN_START.isoformat(),
        "serve_from": demo.SERVE_FROM.isoformat(),
        "end": demo.END.isoformat(),
        "home": str(home),
        "compare_seeds": args.compare_seeds,
        "result": str(home.parent / f"{home.name}.analysis.json"),
    }
    started = time.monotonic()
    analysis = analyse_in_child(home, seed, spec)
    return {
        **spec,
        "rows_per_day": args.rows,
        "trials": args.trials,
        "workers": args.workers,
        "loop_seconds": loop["seconds"],
        "analysis_seconds": round(time.monotonic() - started, 1),
        "finished": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        **analysis,
    }


# --------------------------------------------------------------------------------------
# Analysis (in the cell's child process: get_settings() is the cell's)
# --------------------------------------------------------------------------------------


def loop_summary(timeline: Mapping[str, Any], onset: date | None) -> dict[str, Any]:
    """What the loop did, from its timeline: flags, requests, promotions."""

    def days(name: str) -> list[str]:
        return [e["day"] for e in timeline["events"] if e["event"] == name]

    flagged = days("drift detected")
    after = [d for d in flagged if onset is not None and date.fromisoformat(d) >= onset]
    false_days = [d for d in flagged if onset is None or date.fromisoformat(d) < onset]
    promotions = [
        {"day": e["day"], "version": str(e.get("version"))}
        for e in timeline["events"]
        if e["event"] == "promoted to champion" and str(e.get("version")) != "1"
    ]
    requests = [e for e in timeline["events"] if e["event"] == "retrain requested"]
    return {
        "flagged_days": flagged,
        "false_drift_days": false_days,
        "false_drift_day_count": len(false_days),
        "detected": bool(after),
        "detection_delay_days": (
            (date.fromisoformat(after[0]) - onset).days if after and onset else None
        ),
        "retrain_requested": requests[0]["day"] if requests else None,
        "retrain_requests": len(requests),
        "retrain_drift_start": requests[0].get("drift_start") if requests else None,
        "rejected": [e["day"] for e in timeline["events"] if e["event"] == "retrain rejected"]
        + [e["day"] for e in timeline["events"] if e["event"] == "canary rolled back"],
        "promotion": promotions[0] if promotions else None,
        "promotion_delay_days": (
            (date.fromisoformat(promotions[0]["day"]) - onset).days
            if promotions and onset
            else None
        ),
        "loop_seconds_reported": timeline.get("seconds"),
    }


def labelled_frame(window: Interval, folder: Path, settings: Settings) -> pd.DataFrame:
    """Every labelled transaction of ``window`` (all splits of its training set), with ``day``."""
    import pandas as pd

    from driftline.training.dataset import SPLITS, build_training_set, load_split

    build_training_set(window, folder, settings)
    frame = pd.concat([load_split(folder, split) for split in SPLITS], ignore_index=True)
    frame["day"] = frame["event_timestamp"].dt.date
    return frame


def fraud_types(frame: pd.DataFrame, settings: Settings) -> pd.Series:
    """The simulator's ground-truth fraud type of each row of ``frame`` (``legit`` ...)."""
    import pandas as pd

    from driftline.simulator.landing import truth_path

    parts = [
        pd.read_parquet(
            truth_path(settings.lake_uri, day), columns=["transaction_id", "fraud_type"]
        )
        for day in sorted(set(frame["day"]))
    ]
    truth = pd.concat(parts, ignore_index=True).set_index("transaction_id")["fraud_type"]
    return frame["transaction_id"].map(truth).fillna("unknown")


def compare(
    labels: pd.Series,
    scores: Mapping[str, np.ndarray],
    types: pd.Series,
    threshold: float,
    pair: tuple[str, str],
    rows: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """PR-AUC of each scoring, recall per fraud type at ``threshold``, and the paired
    difference ``pair[0] - pair[1]`` with its bootstrap interval.

    With ``rows`` (the scored rows, ``user_id`` and ``merchant_id``), the interval
    resamples fraud campaigns as the loop's own checks do
    (:func:`driftline.core.evidence.row_groups`); otherwise rows.
    """
    import numpy as np

    from driftline.core.evidence import paired_difference_interval, row_groups
    from driftline.training.evaluate import score_metrics

    y = np.asarray(labels, dtype=np.int64)
    out: dict[str, Any] = {"rows": int(y.size), "frauds": int(y.sum())}
    if y.size == 0 or y.sum() == 0 or y.sum() == y.size:
        return {**out, "note": "needs both classes"}
    for name, s in scores.items():
        metrics = score_metrics(y, s)
        recall = {
            kind: round(float((s[(types == kind).to_numpy()] >= threshold).mean()), 4)
            for kind in sorted(set(types) - NOT_FRAUD)
            if (types == kind).any()
        }
        out[name] = {
            "pr_auc": round(metrics["pr_auc"], 4),
            "roc_auc": round(metrics["roc_auc"], 4),
            "recall_at_threshold_by_fraud_type": recall,
        }
    first, second = pair
    if first in scores and second in scores:
        diff = paired_difference_interval(
            y, scores[first], scores[second], samples=BOOTSTRAP_SAMPLES, confidence=CONFIDENCE,
            seed=0, groups=None if rows is None else row_groups(rows, y),
        )  # fmt: skip
        out["difference"] = {"of": f"{first} - {second}", **diff.to_dict()}
    return out


def version_scores(frame: pd.DataFrame, settings: Settings) -> dict[str, np.ndarray]:
    """Scores of every registered version on ``frame``, by version number."""
    from driftline.lifecycle import registry
    from driftline.training import packaging

    client = registry.client(settings)
    versions = sorted(
        int(v.version) for v in client.search_model_versions(f"name = '{settings.model_name}'")
    )
    return {
        str(v): packaging.predict_frame(packaging.load_version(settings, str(v)), frame)
        for v in versions
    }


def first_unseen_day(version: str, settings: Settings) -> date:
    """First day ``version`` neither trained nor early-stopped on: its holdout's start."""
    from driftline.core.interval import Interval
    from driftline.lifecycle import registry
    from driftline.training.dataset import plan_splits

    tags = registry.client(settings).get_model_version(settings.model_name, version).tags
    start, end = tags["data_interval"].strip("[)").split(", ")
    first: date = plan_splits(Interval.parse(start, end), settings).holdout.start.date()
    return first


def post_drift(
    frame: pd.DataFrame,
    scores: Mapping[str, np.ndarray],
    spec: Mapping[str, Any],
    settings: Settings,
) -> dict[str, Any]:
    """Old and new champion (every version) on the same post-drift labelled days."""
    newest = max(scores, key=int)
    first = date.fromisoformat(spec["onset"] or spec["serve_from"])
    if newest != "1":
        first = max(first, first_unseen_day(newest, settings))
    mask = (frame["day"] >= first).to_numpy()
    days = sorted({d.isoformat() for d in frame.loc[mask, "day"]})
    types = fraud_types(frame.loc[mask], settings)
    ordered = {f"v{v}": s[mask] for v, s in sorted(scores.items(), key=lambda kv: int(kv[0]))}
    pair = (f"v{newest}", "v1")
    result = compare(
        frame.loc[mask, "label"], ordered, types, settings.serve_threshold, pair, frame.loc[mask]
    )
    return {"days": days, **result}


def champion_config(settings: Settings) -> ModelConfig:
    """The first champion's (version 1's) architecture and optimisation settings."""
    from driftline.training.packaging import load_version

    config: ModelConfig = load_version(settings, "1").unwrap_python_model().model.config
    return config


def fresh_vs_day_old(
    frame: pd.DataFrame,
    scores: Mapping[str, np.ndarray],
    spec: Mapping[str, Any],
    home: Path,
    settings: Settings,
) -> dict[str, Any]:
    """Fresh and day-old feature sets trained alike, on the same pre-drift matured days.

    Both are trained on the first model's training set with the first champion's own
    configuration (tuned by the loop on every input, so if anything it favours the
    fresh set), once per training seed (``compare_seeds`` seeds from the settings'
    ``train_seed``): a single short tuning per feature set picked configurations whose
    PR-AUC varied by 2x from one run to the next, which measured the tuning, not the
    features. The headline is the ratio of the seeds' mean PR-AUCs; the paired interval
    and the recall per fraud type are of the first seed's pair.
    """
    import numpy as np

    from driftline.core.columns import MODEL_INPUTS
    from driftline.core.feature_spec import FRESH_FEATURES
    from driftline.core.interval import Interval
    from driftline.training.dataset import build_training_set, load_split
    from driftline.training.trainer import train_model

    fresh = [name for name in FRESH_FEATURES if name in MODEL_INPUTS]
    if not fresh:
        return {"note": "the fresh features are not model inputs: nothing to compare"}
    day_old = tuple(name for name in MODEL_INPUTS if name not in FRESH_FEATURES)
    last = date.fromisoformat(spec["onset"]) if spec["onset"] else date.fromisoformat(spec["end"])
    mask = (frame["day"] < last).to_numpy()
    folder = home / "scenario_matrix" / "first_training_set"
    build_training_set(Interval.parse(spec["train_start"], spec["serve_from"]), folder, settings)
    train, valid = load_split(folder, "train"), load_split(folder, "valid")
    config = champion_config(settings)
    seeds = [settings.train_seed + k for k in range(spec["compare_seeds"])]
    models: dict[str, Any] = {"champion_v1": scores["1"][mask]}
    for name, inputs in (("day_old", day_old), ("fresh", None)):
        for seed in seeds:
            model = train_model(config, train, valid, seed=seed, inputs=inputs)
            models[f"{name}/seed{seed}"] = model.predict_proba(frame.loc[mask])
    days = sorted({d.isoformat() for d in frame.loc[mask, "day"]})
    types = fraud_types(frame.loc[mask], settings)
    pair = (f"fresh/seed{seeds[0]}", f"day_old/seed{seeds[0]}")
    result = compare(
        frame.loc[mask, "label"], models, types, settings.serve_threshold, pair, frame.loc[mask]
    )
    if "difference" not in result:
        return {"days": days, "fresh_features": fresh, **result}
    by_seed = {
        name: [result[f"{name}/seed{seed}"]["pr_auc"] for seed in seeds]
        for name in ("fresh", "day_old")
    }
    mean = {name: round(float(np.mean(values)), 4) for name, values in by_seed.items()}
    means = {name: {"pr_auc": mean[name], "pr_auc_by_seed": by_seed[name]} for name in mean}
    ratio = round(mean["fresh"] / mean["day_old"], 3) if mean["day_old"] > 0 else None
    return {
        "days": days,
        "fresh_features": fresh,
        "trained_with": {"config": "champion v1", **config.to_dict(), "seeds": seeds},
        "fresh_over_day_old": ratio,
        **result,
        **means,
    }


def decision(scenario: str, summary: Mapping[str, Any], post: Mapping[str, Any]) -> dict[str, Any]:
    """Whether the loop decided right in ``scenario`` (the rule is in :data:`RULES`)."""
    promotion = summary["promotion"]
    new = f"v{promotion['version']}" if promotion else None
    old_auc = (post.get("v1") or {}).get("pr_auc")
    new_auc = (post.get(new) or {}).get("pr_auc") if new else None
    better = None if old_auc is None or new_auc is None else new_auc > old_auc
    if scenario == "none":
        right = summary["retrain_requested"] is None
    elif scenario in ("covariate_shift", "mild_covariate_shift"):
        right = promotion is None or better is True
    else:
        right = bool(summary["detected"] and promotion is not None and better)
    return {
        "rule": RULES[scenario],
        "right": right,
        "new_champion": new,
        "new_better_than_old": better,
    }


def analyse(spec_file: Path) -> int:
    """The analysis of one cell (the child process's entry point); writes its JSON."""
    from driftline.core.interval import Interval
    from driftline.core.settings import get_settings

    spec = json.loads(spec_file.read_text())
    settings = get_settings()
    home = Path(spec["home"])
    # A rerun starts afresh: its training sets.
    shutil.rmtree(home / "scenario_matrix", ignore_errors=True)
    timeline = json.loads((home / "demo" / "timeline.json").read_text())
    onset = date.fromisoformat(spec["onset"]) if spec["onset"] else None
    summary = loop_summary(timeline, onset)
    served = Interval.parse(spec["serve_from"], spec["end"])
    frame = labelled_frame(served, home / "scenario_matrix" / "served_set", settings)
    scores = version_scores(frame, settings)
    post = post_drift(frame, scores, spec, settings)
    result = {
        "loop": summary,
        "label_delay_limit_days": (
            settings.retrain_min_drift_days
            + settings.label_maturity_days
            + settings.valid_days
            + settings.holdout_days
        ),
        "post_drift": post,
        "fresh_vs_day_old": fresh_vs_day_old(frame, scores, spec, home, settings),
        "decision": decision(spec["scenario"], summary, post),
    }
    Path(spec["result"]).write_text(json.dumps(result, indent=2, default=str) + "\n")
    return 0


# --------------------------------------------------------------------------------------
# The matrix, its JSON and its table
# --------------------------------------------------------------------------------------


def git_commit() -> str:
    """The checkout's commit (``unknown`` outside git)."""
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def load_results(path: Path) -> dict[str, Any]:
    """The JSON so far, or an empty matrix."""
    if path.is_file():
        data: dict[str, Any] = json.loads(path.read_text())
        return data
    return {"benchmark": "scenario_matrix", "cells": {}}


def save_results(path: Path, results: dict[str, Any]) -> None:
    """Rewrite the JSON (atomically: a killed run leaves the previous one)."""
    from driftline.core.atomic import write_atomic

    results["updated"] = datetime.now(UTC).isoformat(timespec="seconds")
    results["machine"] = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
    results["rules"] = RULES
    payload = (json.dumps(results, indent=2, sort_keys=False, default=str) + "\n").encode()
    write_atomic(path, lambda handle: handle.write(payload))


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table_rows(cells: Mapping[str, Mapping[str, Any]]) -> Iterable[list[str]]:
    """One table row per cell, in seed then scenario order."""
    order = list(SCENARIOS)
    for _, cell in sorted(
        cells.items(), key=lambda kv: (int(kv[1]["seed"]), order.index(kv[1]["scenario"]))
    ):
        loop, post = cell["loop"], cell["post_drift"]
        fresh = cell["fresh_vs_day_old"]
        new = cell["decision"]["new_champion"]
        promotion = loop["promotion"]
        yield [
            str(cell["seed"]),
            cell["scenario"],
            str(loop["false_drift_day_count"]),
            _fmt(loop["detection_delay_days"]),
            (loop["retrain_requested"] or "-")[5:] or "-",
            f"{promotion['day'][5:]} v{promotion['version']}" if promotion else "-",
            f"{_fmt((post.get('v1') or {}).get('pr_auc'))} / "
            f"{_fmt((post.get(new) or {}).get('pr_auc')) if new else '-'}",
            f"{post.get('frauds', '-')}",
            f"{_fmt((fresh.get('fresh') or {}).get('pr_auc'))} / "
            f"{_fmt((fresh.get('day_old') or {}).get('pr_auc'))}",
            "yes" if cell["decision"]["right"] else "**no**",
        ]


HEADER = [
    "seed",
    "scenario",
    "false drift days",
    "detection delay (d)",
    "retrain requested",
    "promoted",
    "post-drift PR-AUC old / new",
    "post-drift frauds",
    "pre-drift PR-AUC fresh / day-old",
    "decision right",
]


def markdown_table(cells: Mapping[str, Mapping[str, Any]]) -> str:
    """The README table of ``cells``."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(cells)]
    return "\n".join(lines)


def _ints(text: str) -> list[int]:
    return [int(item) for item in text.split(",") if item]


def _names(text: str) -> list[str]:
    return [item for item in text.split(",") if item]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=_ints, default=list(DEFAULT_SEEDS), help="e.g. 7,11")
    parser.add_argument(
        "--scenarios", type=_names, default=list(SCENARIOS), help=f"of {', '.join(SCENARIOS)}"
    )
    parser.add_argument("--rows", type=int, default=4000, help="Transactions per day.")
    parser.add_argument("--trials", type=int, default=8, help="Tuning trials per training.")
    parser.add_argument("--workers", type=int, default=2, help="Tuning workers per training.")
    parser.add_argument(
        "--compare-seeds",
        type=int,
        default=3,
        help="Training seeds per feature set (fresh, day-old), each with v1's configuration.",
    )
    parser.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--loop-timeout", type=float, default=3600.0, help="Seconds per loop.")
    parser.add_argument("--force", action="store_true", help="Rerun cells already in --out.")
    parser.add_argument(
        "--reanalyse", action="store_true", help="Redo the analysis of cells in --out."
    )
    parser.add_argument("--table", action="store_true", help="Print the README table only.")
    parser.add_argument("--analyse", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = sorted(set(args.scenarios) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios {unknown}; choose from {sorted(SCENARIOS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the cells not yet in ``--out`` one after the other; print the table."""
    args = parse_args(argv)
    if args.analyse is not None:
        return analyse(args.analyse)
    results = load_results(args.out)
    if args.table:
        print(markdown_table(results["cells"]))
        return 0
    for seed in args.seeds:
        for scenario in args.scenarios:
            key = cell_key(seed, scenario)
            known = key in results["cells"]
            if known and not (args.force or args.reanalyse):
                print(f"{key}: in {args.out}, skipped", flush=True)
                continue
            print(f"{key}: running ...", flush=True)
            results["cells"][key] = run_cell(seed, scenario, args, reuse=not args.force)
            save_results(args.out, results)
            print(f"{key}: done, decision right: {results['cells'][key]['decision']['right']}")
    print(markdown_table(results["cells"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
