"""Serving throughput and tail latency: ``driftline serve`` versus ``mlflow models serve``.

Both servers serve the same registered model version on this machine, in the same run:

* **driftline**: the scoring app (:func:`driftline.serving.create_app`) under uvicorn, as
  ``driftline serve`` runs it, started as ``python bench/serving_bench.py --serve``. Its
  model provider is pinned to the chosen version (the resolver answers that version for
  ``champion`` and nothing for ``canary``), so no alias in the registry is read or moved.
  Features come from the Feast online store at request time (coalesced, guarded
  lookups); the prediction log goes to a temporary folder; every other setting (MLflow,
  Feast, lake, timeouts, admission) is the environment's, except the per-key rate limit
  (off by default here: one key carries the whole load; ``--rate-limit``).
* **mlflow** (the baseline): ``mlflow models serve -m models:/<name>/<version>
  --env-manager local -w 1``. It receives the model-input frame with the store features
  already looked up (``dataframe_split`` JSON), so it does **no** feature lookup.

Both run one worker process, pinned to one CPU with ``taskset`` (``OMP_NUM_THREADS=1``)
when the machine has at least two; the load generator (this process) is pinned to
another. For each mode (single transactions, ``--batch-size`` batches) and server:

1. a **capacity probe**: closed loop, ``--capacity-in-flight`` requests in flight, the
   most requests per second the server answers (the throughput compared);
2. **open-loop cells** (:func:`serving_load.open_loop`) at ``--in-flight`` levels
   (1, 4, 16, 64): Poisson arrivals at ``capacity x L / (L + 1)`` per second, the rate
   at which a single-server queue holds ``L`` requests on average; latency from the
   scheduled send time; the concurrency reached is reported by Little's law.

Servers alternate order from cell to cell, so both see the same machine conditions.
Then a **soak** (:mod:`serving_soak`): driftline at saturation for ``--soak-duration``
seconds, its RSS sampled. An **in-process** section (:mod:`serving_inprocess`) runs first.
The goals (:mod:`serving_report`) are judged and written with the numbers.

Needs a home (``DRIFTLINE_HOME``) with the MLflow registry holding a version of
``DRIFTLINE_MODEL_NAME`` and a materialized Feast online store: the state of ``make
demo``. A home whose champion was registered before the lean form existed can be turned
into one whose champion has it with ``bench/serving_state.py``.

Usage::

    python bench/serving_bench.py [--version N] [--batch-size 64] [--in-flight 1,4,16,64]
                                  [--duration 10] [--soak-duration 60]
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
from serving_load import (
    Target,
    check_scores,
    closed_loop,
    counter_change,
    open_loop,
    server_counters,
    summarize,
    targets,
    wait_breaker_not_open,
)
from serving_report import goals, machine_info, markdown_table, print_table, settings_used
from serving_servers import pin_self, pinning_plan, serve_main, start_servers
from serving_soak import soak
from serving_workload import (
    BASELINE,
    CANDIDATE,
    DEFAULT_DAY,
    SERVERS,
    Workload,
    build_workload,
    choose_version,
    describe_features,
)

from driftline.core.settings import Settings, get_settings
from driftline.serving.app import api_keys

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serving.json"
DEFAULT_LEVELS = (1, 4, 16, 64)
#: Longest wait for driftline's feature breaker to leave "open" before a run.
BREAKER_WAIT_S = 15.0


def level_rate(capacity_rps: float, in_flight: int) -> float:
    """Arrival rate at which a single-server queue of ``capacity_rps`` holds ``in_flight``.

    M/M/1: ``L = rho / (1 - rho)``, so ``rho = L / (L + 1)``.
    """
    return capacity_rps * in_flight / (in_flight + 1)


def measured(target: Target, base_url: str, run: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One run of ``target`` (``run(target, *args)``), with driftline's counters' change.

    A driftline run first waits for the feature breaker not to be open (see
    :func:`wait_breaker_not_open`), so each run starts on a healthy store.
    """
    ready: dict[str, Any] = {"load_average_1m_at_start": round(os.getloadavg()[0], 2)}
    before = None
    if target.server == CANDIDATE:
        ready |= wait_breaker_not_open(base_url, BREAKER_WAIT_S)
        before = server_counters(base_url)
    result = run(target, *args, **kwargs)
    if before is not None:
        result.server = counter_change(before, server_counters(base_url))
    return summarize(result) | ready


def mode_cells(
    mode: str,
    plan: dict[str, Target],
    base_urls: dict[str, str],
    args: argparse.Namespace,
    step: int,
) -> dict[str, Any]:
    """Closed-loop capacity probes, then the open-loop cells, of both servers in one mode.

    The capacity of a server is the most requests per second any closed-loop probe
    (one per in-flight level) got from it: a server may answer fewer at 64 in flight
    than at 4 (contention), and the open-loop rates are fractions of its best.
    """
    closed: dict[str, dict[str, Any]] = {name: {} for name in SERVERS}
    capacity: dict[str, Any] = {}
    for index, level in enumerate(args.in_flight):
        order = SERVERS if (step + index) % 2 == 0 else tuple(reversed(SERVERS))
        for name in order:
            print(f"{mode}: closed loop, {level} in flight -> {name} ...", flush=True)
            closed[name][str(level)] = measured(
                plan[name], base_urls[name], closed_loop, level, args.warmup, args.probe_duration
            )
    for name in SERVERS:
        best = max(closed[name], key=lambda k: closed[name][k]["requests_per_s"] or 0.0)
        capacity[name] = {
            "requests_per_s": closed[name][best]["requests_per_s"],
            "transactions_per_s": closed[name][best]["transactions_per_s"],
            "at_in_flight": int(best),
        }
    cells: dict[str, dict[str, Any]] = {name: {} for name in SERVERS}
    for index, level in enumerate(args.in_flight):
        order = SERVERS if (step + index + 1) % 2 == 0 else tuple(reversed(SERVERS))
        for name in order:
            rate = level_rate(capacity[name]["requests_per_s"], level)
            print(f"{mode}: open loop, {level} in flight -> {name} at {rate:.1f} req/s", flush=True)
            cell = measured(
                plan[name],
                base_urls[name],
                open_loop,
                rate,
                args.warmup,
                args.duration,
                arrivals=args.arrivals,
                seed=args.seed + index,
            )
            cells[name][str(level)] = {"target_in_flight": level} | cell
    return {"capacity": capacity, "closed_loop": closed, "open_loop": cells}


def server_section(
    settings: Settings,
    version: str,
    workload: Workload,
    args: argparse.Namespace,
    plan: dict[str, Any],
) -> dict[str, Any]:
    """Start both servers, check their scores agree, measure, soak, stop them (always)."""
    with (
        tempfile.TemporaryDirectory(prefix="driftline-serving-bench-") as tmp,
        ExitStack() as stack,
    ):
        servers = start_servers(settings, version, plan, Path(tmp), stack)
        exit_codes: dict[str, int | None] = {}
        try:
            print("waiting for both servers to be ready ...", flush=True)
            ready_s = {name: round(s.wait_ready(), 2) for name, s in servers.items()}
            base_urls = {n: s.base_url for n, s in servers.items()}
            scores = check_scores(base_urls, workload, args.api_key)
            runs = targets(base_urls, workload, args)
            modes = {
                mode: mode_cells(mode, runs[mode], base_urls, args, step)
                for step, mode in enumerate(("single", "batch"))
            }
            print(f"soak: {args.soak_duration:.0f} s at saturation -> driftline ...", flush=True)
            soaked = soak(
                runs[args.soak_mode][CANDIDATE],
                base_urls[CANDIDATE],
                args.soak_in_flight,
                args.warmup,
                args.soak_duration,
            )
        finally:
            for name, server in servers.items():
                exit_codes[name] = server.stop()
        commands = {name: s.command for name, s in servers.items()}
        warnings = server_warnings(Path(tmp) / f"{CANDIDATE}.log")
    return {
        "commands": commands,
        "seconds_to_ready": ready_s,
        "exit_codes_after_sigterm": exit_codes,
        "score_check": scores,
        "modes": modes,
        "soak": soaked,
        "driftline_log_warnings": warnings,
    }


def server_warnings(log: Path, most: int = 40) -> dict[str, Any]:
    """driftline's WARNING/ERROR log lines (store calls that failed and why, breakers).

    The counters say how many rows fell back and by which reason; these lines say which
    call failed, after how long, against which limit.
    """
    if not log.exists():
        return {"count": 0, "lines": []}
    lines = [
        line.rstrip()
        for line in log.read_text(errors="replace").splitlines()
        if " WARNING " in line or " ERROR " in line or line.startswith(("WARNING", "ERROR"))
    ]
    return {"count": len(lines), "lines": lines[:most]}


def levels(text: str) -> tuple[int, ...]:
    """``"1,4,16,64"`` as positive ints."""
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("in-flight levels must be positive integers")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options of the benchmark."""
    parser = argparse.ArgumentParser(description="driftline serve vs mlflow models serve.")
    add = parser.add_argument
    add("--version", default=None, help="Model version (default: champion, else the newest).")
    add("--day", type=date.fromisoformat, default=DEFAULT_DAY, help="Simulated day to send.")
    add("--rows-per-day", type=int, default=4000, help="As in make demo.")
    add("--fraud-rate", type=float, default=0.02, help="As in make demo.")
    add("--transactions", type=int, default=2048, help="Distinct transactions cycled through.")
    add("--batch-size", type=int, default=64, help="Transactions per batch request.")
    add("--in-flight", type=levels, default=DEFAULT_LEVELS, help="Open-loop levels (1,4,16,64).")
    add("--arrivals", choices=("poisson", "uniform"), default="poisson", help="Send schedule.")
    add("--duration", type=float, default=10.0, help="Measured seconds per open-loop cell.")
    add("--warmup", type=float, default=2.0, help="Unrecorded seconds before each run.")
    add("--probe-duration", type=float, default=5.0, help="Measured seconds per closed loop.")
    add("--soak-duration", type=float, default=60.0, help="Measured seconds of the soak.")
    add("--soak-in-flight", type=int, default=64, help="Requests in flight in the soak.")
    add("--soak-mode", choices=("single", "batch"), default="single", help="Soak requests.")
    add("--in-process", type=int, default=2000, help="Timed single-transaction requests.")
    add("--seed", type=int, default=7, help="Seed of the arrival schedules.")
    add(
        "--feature-timeout-ms",
        type=int,
        default=None,
        help="serve_feature_timeout_ms for driftline (default: the setting, 50).",
    )
    add(
        "--rate-limit",
        type=float,
        default=0.0,
        help="serve_rate_limit_per_second for driftline (default 0: off, since one key "
        "carries the whole benchmark load).",
    )
    add("--no-pin", action="store_true", help="Do not pin CPUs.")
    add("--api-key", default=None, help="X-API-Key (default: the first key).")
    add("--out", type=Path, default=DEFAULT_OUT, help="JSON result file.")
    add("--markdown", type=Path, default=None, help="Also write the README table here.")
    add("--serve", action="store_true", help=argparse.SUPPRESS)
    add("--port", type=int, default=8000, help=argparse.SUPPRESS)
    add("--log-home", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if min(args.transactions, args.batch_size, args.soak_in_flight) < 1:
        parser.error("--transactions, --batch-size and the in-flight counts must be positive")
    if min(args.duration, args.probe_duration, args.soak_duration) <= 0 or args.warmup < 0:
        parser.error("durations must be positive, --warmup not negative")
    return args


def overridden(settings: Settings, args: argparse.Namespace) -> Settings:
    """``settings`` with the benchmark's overrides (the servers get them by environment)."""
    update: dict[str, Any] = {"serve_rate_limit_per_second": args.rate_limit}
    if args.feature_timeout_ms is not None:
        update["serve_feature_timeout_ms"] = args.feature_timeout_ms
    return settings.model_copy(update=update)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the in-process section, both servers and the soak; write JSON, print tables."""
    args = parse_args(argv)
    if args.serve:
        return serve_main(args)
    # SIGTERM (a CI timeout, kill) stops the servers: they are owned children (see
    # driftline.orchestration.processes, which installs the handler on their start).
    settings = overridden(get_settings(), args)
    if args.batch_size > settings.serve_max_batch:
        raise SystemExit(f"--batch-size is above serve_max_batch ({settings.serve_max_batch})")
    args.api_key = args.api_key or next(iter(api_keys(settings)), "")
    version, why = choose_version(settings, args.version)
    plan = pinning_plan(not args.no_pin)
    pin_self(plan)
    load_at_start = round(os.getloadavg()[0], 2)
    started = datetime.now(UTC)
    print(f"model {settings.model_name} version {version} ({why}); pinning {plan}", flush=True)
    print(f"building {args.transactions} requests from {args.day} ...", flush=True)
    workload = build_workload(settings, args)
    print(f"in-process section ({args.in_process} transactions) ...", flush=True)
    inproc = in_process(settings, version, workload, args)
    servers = server_section(settings, version, workload, args, plan)
    result: dict[str, Any] = {
        "benchmark": "serving",
        "timestamp": started.isoformat(timespec="seconds"),
        "wall_s": round((datetime.now(UTC) - started).total_seconds(), 1),
        "baseline": BASELINE,
        "machine": machine_info() | {"load_average_1m_at_start": load_at_start},
        "pinning": plan,
        "model": {
            "name": settings.model_name,
            "version": version,
            "chosen_by": why,
            "lean_form": inproc["lean_form"],
        },
        "settings": settings_used(settings),
        "settings_overridden_by_the_benchmark": {
            "serve_rate_limit_per_second": args.rate_limit,
            "serve_feature_timeout_ms": args.feature_timeout_ms or "not overridden",
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
            "generator": "bench/serving_load.py: asyncio (uvloop) with a minimal HTTP/1.1 "
            "keep-alive client (bench/serving_http.py), pre-built requests",
            "open_loop": {
                "arrivals": args.arrivals,
                "rate_per_level": "capacity x L / (L + 1) (M/M/1: L requests in the system)",
                "latency_from": "scheduled send time (coordinated omission corrected)",
                "in_flight_levels": list(args.in_flight),
                "duration_s": args.duration,
                "warmup_s": args.warmup,
            },
            "closed_loop": {
                "in_flight_levels": list(args.in_flight),
                "capacity": "the most requests/s of any closed-loop level",
                "duration_s": args.probe_duration,
                "warmup_s": args.warmup,
            },
            "workers_per_server": 1,
        },
        "servers": servers,
        "in_process": inproc,
    }
    result["goals"] = goals(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_table(result)
    table = markdown_table(result)
    print(table)
    if args.markdown:
        args.markdown.write_text(table + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
