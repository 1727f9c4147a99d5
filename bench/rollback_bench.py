"""How long ``driftline rollback`` takes to return: the fast registry path vs MLflowClient.

Issue 13 asks ``driftline rollback`` to return in under 2 s. The command is timed as an
operator runs it: a fresh interpreter (``.venv/bin/driftline rollback --reason ...``),
wall clock from start to exit, against two registries:

* ``sqlite``: the local profile's MLflow SQLite registry (a temporary one);
* ``server``: an ``mlflow server`` on loopback (SQLite backend, one worker), the
  production profile's kind of registry.

For each, every repeat runs the same rollback twice, alternating which goes first:

* **fast** (the default): ``lifecycle.alias_store`` reads and writes the registry
  without importing MLflow;
* **mlflowclient** (the named baseline, the path before it):
  ``DRIFTLINE_REGISTRY_FAST_PATH=false``, the same transitions through MLflowClient.

One untimed run of each path comes first (a fresh server's first calls, the file
cache). Before each run the registry is reset (champion 2, recorded previous champion 1) by this
process. The result (medians, maxima, the ratio baseline / fast and the goal judged on
the fast path's maximum) goes to ``--out`` (default ``bench/results/rollback.json``).

Usage::

    python bench/rollback_bench.py [--repeats 5] [--out bench/results/rollback.json]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench_common import machine, parse_options, write_result

from driftline.orchestration.processes import free_port, mlflow_server

MODEL = "driftline-fraud"
GOAL_S = 2.0
PATHS = {"fast": "true", "mlflowclient": "false"}


def _client(uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _prepare(uri: str) -> None:
    """Register versions 1 and 2 of :data:`MODEL` (the flip needs no model files)."""
    client = _client(uri)
    client.create_registered_model(MODEL)
    for _ in range(2):
        client.create_model_version(MODEL, source="s3://driftline-models/none")


def _reset(uri: str) -> None:
    """Champion 2, recorded previous champion 1: what a rollback undoes."""
    client = _client(uri)
    client.set_registered_model_alias(MODEL, "champion", "2")
    client.set_registered_model_tag(MODEL, "champion.previous", "1")


def _time_rollback(home: Path, uri: str, fast: str) -> float:
    """Seconds ``driftline rollback`` takes in a fresh interpreter (fails on an error)."""
    env = os.environ | {
        "DRIFTLINE_HOME": str(home),
        "DRIFTLINE_MLFLOW_TRACKING_URI": uri,
        "DRIFTLINE_REGISTRY_FAST_PATH": fast,
    }
    command = [str(Path(sys.executable).parent / "driftline"), "rollback", "--reason", "bench"]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"rollback failed ({fast=}): {done.stdout}{done.stderr}")
    return seconds


def _measure(home: Path, uri: str, repeats: int) -> dict[str, Any]:
    """Alternating fast / baseline rollbacks; per path the seconds and their summary."""
    _prepare(uri)
    for name in PATHS:  # warm-up, not timed: the server's first calls, the file cache
        _reset(uri)
        _time_rollback(home, uri, PATHS[name])
    seconds: dict[str, list[float]] = {name: [] for name in PATHS}
    for repeat in range(repeats):
        order = list(PATHS) if repeat % 2 == 0 else list(reversed(PATHS))
        for name in order:
            _reset(uri)
            seconds[name].append(_time_rollback(home, uri, PATHS[name]))
    summary: dict[str, Any] = {
        name: {
            "seconds": [round(s, 3) for s in runs],
            "median_s": round(statistics.median(runs), 3),
            "max_s": round(max(runs), 3),
        }
        for name, runs in seconds.items()
    }
    fast, slow = summary["fast"], summary["mlflowclient"]
    summary["ratio_mlflowclient_over_fast_median"] = round(slow["median_s"] / fast["median_s"], 2)
    summary["goal_under_2s"] = fast["max_s"] < GOAL_S
    return summary


@contextmanager
def _mlflow_server(folder: Path) -> Iterator[str]:
    port = free_port()
    artifacts = {"--default-artifact-root": (folder / "artifacts").as_uri()}
    backend = f"sqlite:///{folder / 'server.db'}"
    with mlflow_server(port, backend, artifacts, log_path=folder / "mlflow.log"):
        yield f"http://127.0.0.1:{port}"


def run(repeats: int) -> dict[str, Any]:
    """Both registries measured; the JSON result."""
    load_before = os.getloadavg()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rollback-bench-") as tmp:
        folder = Path(tmp)
        sqlite = _measure(folder, f"sqlite:///{folder / 'mlflow.db'}", repeats)
        with _mlflow_server(folder) as url:
            server = _measure(folder, url, repeats)
    return {
        "benchmark": "rollback",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "wall_s": round(time.perf_counter() - started, 1),
        "baseline": "mlflowclient (DRIFTLINE_REGISTRY_FAST_PATH=false)",
        "goal": f"driftline rollback returns in under {GOAL_S} s (the fast path's maximum)",
        "machine": machine(load_before),
        "repeats": repeats,
        "registries": {"sqlite": sqlite, "server": server},
    }


def main() -> None:
    """Parse the options, run, print and write the result."""
    args = parse_options(__doc__, repeats=5, out="bench/results/rollback.json")
    result = run(args.repeats)
    write_result(args.out, result)
    for name, found in result["registries"].items():
        print(
            f"{name:7s} fast median {found['fast']['median_s']:.2f} s max "
            f"{found['fast']['max_s']:.2f} s | mlflowclient median "
            f"{found['mlflowclient']['median_s']:.2f} s | ratio "
            f"{found['ratio_mlflowclient_over_fast_median']}x | under 2 s: "
            f"{found['goal_under_2s']}"
        )


if __name__ == "__main__":
    main()
