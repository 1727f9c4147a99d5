"""Serving latency and throughput: ``driftline serve`` versus ``mlflow models serve``.

Both servers serve the same registered model version on this machine, in the same run:

* **driftline**: the scoring app (:func:`driftline.serving.create_app`) under uvicorn, as
  ``driftline serve`` runs it, started as ``python bench/serving_bench.py --serve``. Its
  model provider is pinned to the chosen version (the resolver answers that version for
  ``champion`` and nothing for ``canary``), so no alias in the registry is read or moved.
  Features come from the Feast online store at request time; the prediction log goes to
  a temporary folder; every other setting (MLflow, Feast, lake) is the environment's.
* **mlflow** (the baseline): ``mlflow models serve -m models:/<name>/<version>
  --env-manager local -w 1``. It receives the model-input frame with the store features
  already looked up (``dataframe_split`` JSON), so it does **no** feature lookup: the
  ratios include driftline's feature lookup, validation, API-key check, routing,
  prediction log and metrics.

Both run one worker process, pinned to CPU 0 with ``taskset`` (with ``OMP_NUM_THREADS=1``)
when the machine has at least two CPUs; the load generator (this process) is pinned to
CPU 1. A closed-loop load generator keeps ``--concurrency`` requests in flight
(httpx, keep-alive) for ``--duration`` seconds per segment, after ``--warmup`` seconds
unrecorded. Segments cover single-transaction requests and batch requests
(``--batch-size`` transactions) on both servers, interleaved over ``--rounds`` rounds with
alternating order, so both servers see the same machine conditions. Before measuring,
the scores of both servers on the same batch are compared.

An in-process section times, for single transactions on a warm process: the bare pyfunc
predict (MLflow schema check, preprocessing, torch forward), the wrapped model's
``predict_proba`` without MLflow, the Feast online lookup alone, ``Scorer.score`` (lookup,
model frame, routing, predict, prediction log, metrics) and a full request through the
app with FastAPI's ``TestClient`` (no network), and reports what the scoring path adds over
the bare predict; the same for ``--batch-size`` batches.

The parts: :mod:`serving_workload` (model version, request bodies),
:mod:`serving_servers` (pinning, the two servers as owned child processes, the
``--serve`` child), :mod:`serving_load` (load generator, score check, summaries),
:mod:`serving_inprocess` (the in-process section) and :mod:`serving_report` (machine,
settings, table); this file sequences them and writes the JSON.

Needs the state of ``make demo`` (``DRIFTLINE_HOME``): the MLflow registry with a version
of ``DRIFTLINE_MODEL_NAME`` and a materialized Feast online store.

Usage::

    python bench/serving_bench.py [--version N] [--concurrency 8] [--batch-size 64]
                                  [--duration 8] [--rounds 2] [--in-process 400]
                                  [--out bench/results/serving.json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from serving_inprocess import in_process
from serving_load import check_scores, run_segments, server_ratios, summarize, targets
from serving_report import machine_info, print_table, settings_used
from serving_servers import pin_self, pinning_plan, serve_main, start_servers
from serving_workload import (
    BASELINE,
    DEFAULT_DAY,
    Workload,
    build_workload,
    choose_version,
    describe_features,
)

from driftline.core.settings import Settings, get_settings
from driftline.serving.app import api_keys

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serving.json"


def server_section(
    settings: Settings,
    version: str,
    workload: Workload,
    args: argparse.Namespace,
    plan: dict[str, Any],
) -> dict[str, Any]:
    """Start both servers, check their scores agree, measure, stop them (always)."""
    with (
        tempfile.TemporaryDirectory(prefix="driftline-serving-bench-") as tmp,
        ExitStack() as stack,
    ):
        servers = start_servers(settings, version, plan, Path(tmp), stack)
        exit_codes: dict[str, int | None] = {}
        try:
            print("waiting for both servers to be ready ...", flush=True)
            ready_s = {name: round(s.wait_ready(), 2) for name, s in servers.items()}
            segment_plan = targets({n: s.base_url for n, s in servers.items()}, workload, args)
            scores = check_scores(segment_plan)
            segments, schedule = run_segments(segment_plan, args)
        finally:
            for name, server in servers.items():
                exit_codes[name] = server.stop()
        commands = {name: s.command for name, s in servers.items()}
    sizes = {"single": 1, "batch": args.batch_size}
    results = {
        mode: {name: summarize(parts, sizes[mode]) for name, parts in by_server.items()}
        for mode, by_server in segments.items()
    }
    return {
        "commands": commands,
        "seconds_to_ready": ready_s,
        "exit_codes_after_sigterm": exit_codes,
        "score_check": scores,
        "results": results,
        "ratios": server_ratios(results),
        "schedule": schedule,
    }


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(description="driftline serve vs mlflow models serve.")
    parser.add_argument(
        "--version", default=None, help="Model version (default: champion, else the newest)."
    )
    parser.add_argument(
        "--day", type=date.fromisoformat, default=DEFAULT_DAY, help="Simulated day to send."
    )
    parser.add_argument("--rows-per-day", type=int, default=4000, help="As in make demo.")
    parser.add_argument("--fraud-rate", type=float, default=0.02, help="As in make demo.")
    parser.add_argument(
        "--transactions", type=int, default=2048, help="Distinct transactions cycled through."
    )
    parser.add_argument("--concurrency", type=int, default=8, help="Requests in flight.")
    parser.add_argument("--batch-size", type=int, default=64, help="Transactions per batch.")
    parser.add_argument("--duration", type=float, default=8.0, help="Seconds per segment.")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="Unrecorded seconds before each segment."
    )
    parser.add_argument("--rounds", type=int, default=2, help="Interleaved rounds.")
    parser.add_argument(
        "--in-process",
        type=int,
        default=400,
        help="Single-transaction requests timed in-process (and an eighth as many batches).",
    )
    parser.add_argument(
        "--feature-timeout-ms",
        type=int,
        default=1000,
        help="serve_feature_timeout_ms for driftline (default 1000, not the setting's 50: "
        "under load on one core a 50 ms lookup timeout opens the breaker and driftline "
        "serves fallback features, skipping the lookup this benchmark is meant to measure).",
    )
    parser.add_argument("--no-pin", action="store_true", help="Do not pin CPUs.")
    parser.add_argument("--api-key", default=None, help="X-API-Key (default: the first key).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON result file.")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=8000, help=argparse.SUPPRESS)
    parser.add_argument("--log-home", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.transactions, args.concurrency, args.batch_size, args.rounds) < 1:
        parser.error("--transactions, --concurrency, --batch-size and --rounds must be positive")
    if args.duration <= 0 or args.warmup < 0 or args.in_process < 1:
        parser.error("--duration and --in-process must be positive, --warmup not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the in-process section and both servers, write JSON, print a table."""
    args = parse_args(argv)
    if args.serve:
        return serve_main(args)
    # SIGTERM (a CI timeout, kill) stops the servers: they are owned children (see
    # driftline.orchestration.processes, which installs the handler on their start).
    settings = get_settings().model_copy(
        update={"serve_feature_timeout_ms": args.feature_timeout_ms}
    )
    if args.batch_size > settings.serve_max_batch:
        raise SystemExit(f"--batch-size is above serve_max_batch ({settings.serve_max_batch})")
    args.api_key = args.api_key or next(iter(api_keys(settings)), "")
    version, why = choose_version(settings, args.version)
    plan = pinning_plan(not args.no_pin)
    pin_self(plan)
    load_at_start = round(os.getloadavg()[0], 2)
    print(f"model {settings.model_name} version {version} ({why}); pinning {plan}", flush=True)
    print(f"building {args.transactions} requests from {args.day} ...", flush=True)
    workload = build_workload(settings, args)
    print(f"in-process section ({args.in_process} transactions) ...", flush=True)
    inproc = in_process(settings, version, workload, args)
    servers = server_section(settings, version, workload, args, plan)
    result: dict[str, Any] = {
        "benchmark": "serving",
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "baseline": BASELINE,
        "machine": machine_info() | {"load_average_1m_at_start": load_at_start},
        "pinning": plan,
        "model": {"name": settings.model_name, "version": version, "chosen_by": why},
        "settings": settings_used(settings),
        "settings_overridden_by_the_benchmark": {
            "serve_feature_timeout_ms": args.feature_timeout_ms,
            "home (prediction log only)": "a temporary folder",
        },
        "workload": {
            "day": args.day.isoformat(),
            "rows_per_day": args.rows_per_day,
            "fraud_rate": args.fraud_rate,
            "distinct_transactions": len(workload.payloads),
            "batch_size": args.batch_size,
            "features": describe_features(workload.features),
        },
        "load": {
            "concurrency": args.concurrency,
            "rounds": args.rounds,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "client": "httpx.AsyncClient, keep-alive, closed loop, pre-serialized bodies",
            "workers_per_server": 1,
        },
        "servers": servers,
        "ratio_definition": (
            "latency ratios: driftline over mlflow (above 1: driftline slower); throughput "
            "ratios: driftline requests/s over mlflow requests/s (below 1: driftline serves "
            "fewer). mlflow gets the model frame with the store features pre-looked-up, so "
            "the ratios include driftline's Feast lookup, validation, auth, routing, "
            "prediction log and metrics."
        ),
        "in_process": inproc,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
