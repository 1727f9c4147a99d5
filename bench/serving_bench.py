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

Needs the state of ``make demo`` (``DRIFTLINE_HOME``): the MLflow registry with a version
of ``DRIFTLINE_MODEL_NAME`` and a materialized Feast online store.

Usage::

    python bench/serving_bench.py [--version N] [--concurrency 8] [--batch-size 64]
                                  [--duration 8] [--rounds 2] [--in-process 400]
                                  [--out bench/results/serving.json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import fastapi
import httpx
import mlflow
import numpy as np
import pandas as pd
import torch
import uvicorn

from driftline.core.settings import Settings, get_settings
from driftline.lifecycle import registry
from driftline.serving import FeastFeatureSource, ModelProvider, create_app
from driftline.serving.api import API_KEY_HEADER
from driftline.serving.app import api_keys
from driftline.serving.lookup import FeatureRow
from driftline.serving.replay import day_payloads
from driftline.serving.schemas import Transaction
from driftline.serving.scoring import model_frame
from driftline.simulator import SimulatorConfig
from driftline.training import packaging

BASELINE = "mlflow"
CANDIDATE = "driftline"
SERVERS = (CANDIDATE, BASELINE)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "serving.json"
#: The last day ``make demo`` ingests (its window is 2026-01-01 .. 2026-01-17, exclusive).
DEFAULT_DAY = date(2026, 1, 16)
SERVER_CPU, CLIENT_CPU = 0, 1
READY_TIMEOUT_S = 240.0


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def ms_stats(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p99, mean, min and max of ``seconds`` in milliseconds."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    values = np.asarray(seconds) * 1000.0
    return {
        "n": len(values),
        "p50_ms": round(float(np.percentile(values, 50)), 3),
        "p99_ms": round(float(np.percentile(values, 99)), 3),
        "mean_ms": round(float(values.mean()), 3),
        "min_ms": round(float(values.min()), 3),
        "max_ms": round(float(values.max()), 3),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded, or ``None`` when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def pinned_version(version: str) -> Callable[[str], str | None]:
    """A model-provider resolver serving ``version`` as champion and no canary."""
    return lambda alias: version if alias == "champion" else None


def log_settings(settings: Settings, home: Path) -> Settings:
    """``settings`` with ``home`` (the prediction log) moved to ``home``.

    Every URI was filled in by ``Settings._derive_defaults`` when ``settings`` was built,
    and ``model_copy`` does not run validators again, so MLflow, Feast and the lake stay
    where they were.
    """
    return settings.model_copy(update={"home": home})


# --------------------------------------------------------------------------------------
# Model version and request bodies
# --------------------------------------------------------------------------------------


def choose_version(settings: Settings, requested: str | None) -> tuple[str, str]:
    """The version to serve and why: ``requested``, else ``champion``, else the newest."""
    if requested:
        # Fails here, not after a server start, when the version does not exist.
        registry.client(settings).get_model_version(settings.model_name, requested)
        return requested, "--version"
    champion = registry.version_by_alias(settings, "champion")
    if champion is not None:
        return str(champion.version), "alias champion"
    versions = registry.client(settings).search_model_versions(f"name='{settings.model_name}'")
    if not versions:
        raise SystemExit(
            f"no registered version of {settings.model_name} under {settings.home}: "
            "run `make demo` first (or point DRIFTLINE_HOME at a home where it ran)"
        )
    return str(max(int(v.version) for v in versions)), "newest version (no champion alias)"


@dataclass(frozen=True)
class Workload:
    """The transactions of the run, their store features and the request bodies."""

    payloads: list[dict[str, Any]]
    transactions: list[Transaction]
    features: list[FeatureRow]
    frames: list[pd.DataFrame]
    bodies: dict[str, dict[str, list[bytes]]] = field(default_factory=dict)


def lookup_features(settings: Settings, transactions: Sequence[Transaction]) -> list[FeatureRow]:
    """The online features of each transaction's (user, merchant), read once from Feast."""
    source = FeastFeatureSource(settings)
    rows: list[FeatureRow] = []
    for start in range(0, len(transactions), 256):
        chunk = transactions[start : start + 256]
        rows += source.fetch([(t.user_id, t.merchant_id) for t in chunk])
    return rows


def frame_body(frame: pd.DataFrame) -> bytes:
    """``frame`` as an MLflow ``dataframe_split`` request (NaN as JSON ``NaN``)."""
    split = frame.to_dict(orient="split")
    body = {"dataframe_split": {"columns": split["columns"], "data": split["data"]}}
    return json.dumps(body).encode()


def build_workload(settings: Settings, args: argparse.Namespace) -> Workload:
    """Simulated transactions of ``--day``, their features and both servers' bodies."""
    config = SimulatorConfig(
        seed=settings.seed,
        rows_per_day=args.rows_per_day,
        fraud_rate=args.fraud_rate,
        anchor=settings.simulation_start,
    )
    payloads = day_payloads(config, args.day, args.transactions)
    if len(payloads) < args.batch_size:
        raise SystemExit(f"only {len(payloads)} transactions on {args.day}")
    transactions = [Transaction.model_validate(p) for p in payloads]
    features = lookup_features(settings, transactions)
    frames = [model_frame([t], [f]) for t, f in zip(transactions, features, strict=True)]
    size = args.batch_size
    batches = range(0, len(payloads) - size + 1, size)
    bodies = {
        CANDIDATE: {
            "single": [json.dumps(p).encode() for p in payloads],
            "batch": [
                json.dumps({"transactions": payloads[i : i + size]}).encode() for i in batches
            ],
        },
        BASELINE: {
            "single": [frame_body(f) for f in frames],
            "batch": [
                frame_body(model_frame(transactions[i : i + size], features[i : i + size]))
                for i in batches
            ],
        },
    }
    return Workload(payloads, transactions, features, frames, bodies)


def describe_features(features: Sequence[FeatureRow]) -> dict[str, Any]:
    """How complete the looked-up store features are (a missing entity is all NaN)."""
    values = pd.DataFrame.from_records(features)
    return {
        "rows": len(values),
        "rows_with_all_features_missing": int(values.isna().all(axis=1).sum()),
        "share_of_missing_values": round(float(values.isna().to_numpy().mean()), 4),
    }


# --------------------------------------------------------------------------------------
# CPU pinning
# --------------------------------------------------------------------------------------


def pinning_plan(enabled: bool) -> dict[str, Any]:
    """Where the servers and the load generator run (pinned only with 2+ usable CPUs)."""
    usable = sorted(os.sched_getaffinity(0))
    if not enabled:
        return {"pinned": False, "reason": "--no-pin", "usable_cpus": usable}
    if len(usable) < 2 or shutil.which("taskset") is None:
        reason = "fewer than 2 usable CPUs" if len(usable) < 2 else "taskset not found"
        return {"pinned": False, "reason": reason, "usable_cpus": usable}
    return {
        "pinned": True,
        "usable_cpus": usable,
        "server_cpus": [usable[SERVER_CPU]],
        "load_generator_cpus": [usable[CLIENT_CPU]],
        "server_threads": "OMP_NUM_THREADS=1 (torch intra-op threads), both servers",
        "in_process_section": "load generator's CPU, torch.set_num_threads(1)",
    }


def pin_self(plan: dict[str, Any]) -> None:
    """Pin this process (load generator, in-process section) as ``plan`` says."""
    if plan["pinned"]:
        os.sched_setaffinity(0, set(plan["load_generator_cpus"]))
        torch.set_num_threads(1)


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------


@dataclass
class Server:
    """One server process (its own session, so its whole process group can be stopped)."""

    name: str
    process: subprocess.Popen[bytes]
    base_url: str
    ready_path: str
    log_path: Path
    command: list[str]
    started_at: float = field(default_factory=time.perf_counter)

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's output."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


def server_env(settings: Settings, plan: dict[str, Any]) -> dict[str, str]:
    """Environment of both servers: this one, the venv first on PATH, MLflow's URIs."""
    env = dict(os.environ)
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    env["DRIFTLINE_HOME"] = str(settings.home)
    env["MLFLOW_TRACKING_URI"] = settings.mlflow_tracking_uri
    env["MLFLOW_REGISTRY_URI"] = settings.mlflow_tracking_uri
    env["DRIFTLINE_SERVE_FEATURE_TIMEOUT_MS"] = str(settings.serve_feature_timeout_ms)
    if plan["pinned"]:
        env["OMP_NUM_THREADS"] = "1"
        env["MKL_NUM_THREADS"] = "1"
    return env


def start_server(
    name: str,
    command: list[str],
    *,
    port: int,
    ready_path: str,
    env: dict[str, str],
    plan: dict[str, Any],
    folder: Path,
) -> Server:
    """Start ``command`` (under ``taskset`` when pinning), output to a log file."""
    if plan["pinned"]:
        cpus = ",".join(str(c) for c in plan["server_cpus"])
        command = ["taskset", "-c", cpus, *command]
    log_path = folder / f"{name}.log"
    with open(log_path, "wb") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    return Server(name, process, f"http://127.0.0.1:{port}", ready_path, log_path, command)


def start_servers(
    settings: Settings, version: str, plan: dict[str, Any], folder: Path
) -> dict[str, Server]:
    """Start the driftline app and ``mlflow models serve`` on the same version."""
    env = server_env(settings, plan)
    ports = {CANDIDATE: free_port(), BASELINE: free_port()}
    driftline_cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--serve",
        "--version",
        version,
        "--port",
        str(ports[CANDIDATE]),
        "--log-home",
        str(folder / "driftline-home"),
    ]
    mlflow_cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        f"models:/{settings.model_name}/{version}",
        "--env-manager",
        "local",
        "-w",
        "1",
        "-h",
        "127.0.0.1",
        "-p",
        str(ports[BASELINE]),
    ]
    servers: dict[str, Server] = {}
    for name, cmd, ready in (
        (CANDIDATE, driftline_cmd, "/ready"),
        (BASELINE, mlflow_cmd, "/ping"),
    ):
        servers[name] = start_server(
            name, cmd, port=ports[name], ready_path=ready, env=env, plan=plan, folder=folder
        )
    return servers


def wait_ready(server: Server, timeout_s: float = READY_TIMEOUT_S) -> float:
    """Poll the server's readiness route until 200; seconds since the server started."""
    while time.perf_counter() - server.started_at < timeout_s:
        if server.process.poll() is not None:
            raise RuntimeError(
                f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}"
            )
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(server.base_url + server.ready_path, timeout=2.0).status_code == 200:
                return time.perf_counter() - server.started_at
        time.sleep(0.25)
    raise RuntimeError(f"{server.name} not ready after {timeout_s:.0f} s:\n{server.log_tail()}")


def stop_server(server: Server) -> int | None:
    """SIGTERM the server's process group, SIGKILL after 15 s; its exit code."""
    if server.process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGTERM)
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.process.pid, signal.SIGKILL)
            server.process.wait(timeout=15)
    return server.process.returncode


def serve_main(args: argparse.Namespace) -> int:
    """``--serve``: the driftline app on one version, prediction log under ``--log-home``.

    Built like ``driftline serve`` (uvicorn, one process, ``log_level="info"``), with a
    model provider pinned to ``--version`` instead of the registry's aliases.
    """
    settings = get_settings()
    if not args.version or not args.log_home:
        raise SystemExit("--serve needs --version and --log-home")

    def factory() -> fastapi.FastAPI:
        provider = ModelProvider(settings, resolve=pinned_version(args.version))
        return create_app(
            log_settings(settings, args.log_home),
            features=FeastFeatureSource(settings),
            models=provider,
        )

    uvicorn.run(factory, factory=True, host="127.0.0.1", port=args.port, log_level="info")
    return 0


# --------------------------------------------------------------------------------------
# Load generation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where and what one segment sends."""

    server: str
    mode: str
    url: str
    headers: dict[str, str]
    bodies: list[bytes]
    transactions_per_request: int


@dataclass
class Segment:
    """What one measured segment saw (latencies in seconds, per request)."""

    latencies: list[float] = field(default_factory=list)
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    fallback_requests: int = 0
    wall_s: float = 0.0
    client_cpu_s: float = 0.0


async def _load(
    client: httpx.AsyncClient, target: Target, concurrency: int, seconds: float
) -> Segment:
    """Keep ``concurrency`` requests in flight for ``seconds``; what came back."""
    segment = Segment()
    counter = itertools.count()
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            body = target.bodies[next(counter) % len(target.bodies)]
            sent = time.perf_counter()
            try:
                reply = await client.post(target.url, content=body, headers=target.headers)
            except httpx.TransportError as error:
                segment.errors[type(error).__name__] += 1
                continue
            elapsed = time.perf_counter() - sent
            if reply.status_code != 200:
                segment.errors[str(reply.status_code)] += 1
                continue
            segment.ok += 1
            segment.latencies.append(elapsed)
            if b'"features_fallback":true' in reply.content:
                segment.fallback_requests += 1

    started, cpu_started = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    segment.wall_s = time.perf_counter() - started
    segment.client_cpu_s = time.process_time() - cpu_started
    return segment


async def _warm_and_measure(
    target: Target, concurrency: int, warmup_s: float, duration_s: float
) -> Segment:
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:
        if warmup_s > 0:
            await _load(client, target, concurrency, warmup_s)
        return await _load(client, target, concurrency, duration_s)


def measure(target: Target, concurrency: int, warmup_s: float, duration_s: float) -> Segment:
    """One segment: ``warmup_s`` unrecorded, then ``duration_s`` at fixed concurrency."""
    return asyncio.run(_warm_and_measure(target, concurrency, warmup_s, duration_s))


def targets(servers: dict[str, Server], workload: Workload, args: argparse.Namespace) -> dict:
    """``targets[mode][server]``: URL, headers and bodies of each segment kind."""
    key = {API_KEY_HEADER: args.api_key, "content-type": "application/json"}
    json_only = {"content-type": "application/json"}
    paths = {
        CANDIDATE: {"single": "/v1/score", "batch": "/v1/score/batch"},
        BASELINE: {"single": "/invocations", "batch": "/invocations"},
    }
    sizes = {"single": 1, "batch": args.batch_size}
    return {
        mode: {
            name: Target(
                server=name,
                mode=mode,
                url=servers[name].base_url + paths[name][mode],
                headers=key if name == CANDIDATE else json_only,
                bodies=workload.bodies[name][mode],
                transactions_per_request=sizes[mode],
            )
            for name in SERVERS
        }
        for mode in ("single", "batch")
    }


def post_driftline_batch(target: Target, attempts: int = 10) -> list[dict[str, Any]]:
    """driftline's scores of the first batch, retried until no row used the fallback.

    The first lookup after start opens the Feast store; if it outlasts the feature
    timeout, that request is answered from the (empty) fallback instead.
    """
    scores: list[dict[str, Any]] = []
    for _ in range(attempts):
        reply = httpx.post(
            target.url, content=target.bodies[0], headers=target.headers, timeout=60.0
        )
        reply.raise_for_status()
        scores = reply.json()["scores"]
        if not any(s["features_fallback"] for s in scores):
            break
        time.sleep(0.5)
    return scores


def check_scores(plan: dict) -> dict[str, Any]:
    """Both servers' scores on the first batch, compared (same model, same inputs?)."""
    driftline_target, mlflow_target = plan["batch"][CANDIDATE], plan["batch"][BASELINE]
    ours = post_driftline_batch(driftline_target)
    theirs = httpx.post(
        mlflow_target.url,
        content=mlflow_target.bodies[0],
        headers=mlflow_target.headers,
        timeout=60.0,
    )
    theirs.raise_for_status()
    a = np.asarray([s["score"] for s in ours], dtype=np.float64)
    b = np.clip(np.asarray(theirs.json()["predictions"], dtype=np.float64).reshape(-1), 0, 1)
    diff = float(np.abs(a - b).max())
    return {
        "transactions": len(a),
        "max_abs_score_difference": diff,
        "identical_within_1e-6": diff <= 1e-6,
        "driftline_fallback_rows": sum(s["features_fallback"] for s in ours),
    }


def run_segments(
    plan: dict, args: argparse.Namespace
) -> tuple[dict[str, dict[str, list[Segment]]], list[dict[str, Any]]]:
    """All segments, interleaved: per round and mode, both servers, order alternating."""
    segments: dict[str, dict[str, list[Segment]]] = {
        mode: {name: [] for name in SERVERS} for mode in plan
    }
    schedule: list[dict[str, Any]] = []
    step = 0
    for round_number in range(args.rounds):
        for mode in plan:
            order = SERVERS if step % 2 == 0 else tuple(reversed(SERVERS))
            step += 1
            for name in order:
                print(f"round {round_number + 1}/{args.rounds}: {mode} -> {name} ...", flush=True)
                segment = measure(plan[mode][name], args.concurrency, args.warmup, args.duration)
                segments[mode][name].append(segment)
                schedule.append(
                    {
                        "round": round_number + 1,
                        "mode": mode,
                        "server": name,
                        "requests_per_s": round(segment.ok / segment.wall_s, 2),
                        "p50_ms": ms_stats(segment.latencies)["p50_ms"],
                        "client_cpu_share": round(segment.client_cpu_s / segment.wall_s, 3),
                    }
                )
    return segments, schedule


def summarize(parts: list[Segment], transactions_per_request: int) -> dict[str, Any]:
    """Latency over all rounds' requests; throughput as total requests over total time."""
    latencies = [x for part in parts for x in part.latencies]
    ok = sum(p.ok for p in parts)
    wall = sum(p.wall_s for p in parts)
    errors: Counter[str] = Counter()
    for part in parts:
        errors.update(part.errors)
    return {
        "latency": ms_stats(latencies),
        "requests": ok,
        "measured_s": round(wall, 3),
        "requests_per_s": round(ok / wall, 2) if wall else None,
        "transactions_per_s": round(ok * transactions_per_request / wall, 2) if wall else None,
        "errors": dict(errors),
        "requests_with_features_fallback": sum(p.fallback_requests for p in parts),
        "load_generator_cpu_share": round(sum(p.client_cpu_s for p in parts) / wall, 3)
        if wall
        else None,
    }


def server_ratios(results: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """driftline over mlflow per mode: latency (>1: slower) and throughput (<1: fewer)."""
    out: dict[str, float | None] = {}
    for mode, pair in results.items():
        ours, theirs = pair[CANDIDATE], pair[BASELINE]
        for stat in ("p50_ms", "p99_ms", "mean_ms"):
            name = f"{mode}_latency_{stat.removesuffix('_ms')}_driftline_over_mlflow"
            out[name] = ratio(ours["latency"][stat], theirs["latency"][stat])
        out[f"{mode}_throughput_driftline_over_mlflow"] = ratio(
            ours["requests_per_s"], theirs["requests_per_s"]
        )
    return out


def server_section(
    settings: Settings, version: str, workload: Workload, args: argparse.Namespace, plan: dict
) -> dict[str, Any]:
    """Start both servers, check their scores agree, measure, stop them (always)."""
    with tempfile.TemporaryDirectory(prefix="driftline-serving-bench-") as tmp:
        servers = start_servers(settings, version, plan, Path(tmp))
        exit_codes: dict[str, int | None] = {}
        try:
            print("waiting for both servers to be ready ...", flush=True)
            ready_s = {name: round(wait_ready(s), 2) for name, s in servers.items()}
            segment_plan = targets(servers, workload, args)
            scores = check_scores(segment_plan)
            segments, schedule = run_segments(segment_plan, args)
        finally:
            for name, server in servers.items():
                exit_codes[name] = stop_server(server)
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


# --------------------------------------------------------------------------------------
# In-process section
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Unit:
    """One request's worth of work for the in-process section."""

    transactions: list[Transaction]
    frame: pd.DataFrame
    path: str
    body: dict[str, Any]


def in_process_units(workload: Workload, batch_size: int) -> dict[str, list[Unit]]:
    """Single-transaction units and ``batch_size`` units over the workload."""
    txns, payloads, features = workload.transactions, workload.payloads, workload.features
    single = [
        Unit([t], f, "/v1/score", p)
        for t, f, p in zip(txns, workload.frames, payloads, strict=True)
    ]
    batch = [
        Unit(
            txns[i : i + batch_size],
            model_frame(txns[i : i + batch_size], features[i : i + batch_size]),
            "/v1/score/batch",
            {"transactions": payloads[i : i + batch_size]},
        )
        for i in range(0, len(txns) - batch_size + 1, batch_size)
    ]
    return {"single": single, "batch": batch}


def in_process(
    settings: Settings, version: str, workload: Workload, args: argparse.Namespace
) -> dict[str, Any]:
    """Per request: bare predict vs lookup vs the scorer vs a full request, in-process.

    The same loaded pyfunc object serves the bare calls and the app. Each request's
    work goes through every stage in turn, so all stages see the same machine
    conditions. Single transactions and ``--batch-size`` batches; the first requests of
    each run once untimed first.
    """
    from fastapi.testclient import TestClient

    model = packaging.load_version(settings, version)
    trained = model.unwrap_python_model().model
    source = FeastFeatureSource(settings)
    headers = {API_KEY_HEADER: args.api_key}
    units = in_process_units(workload, args.batch_size)
    counts = {"single": args.in_process, "batch": max(1, args.in_process // 8)}
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="driftline-serving-bench-log-") as tmp:
        provider = ModelProvider(settings, resolve=pinned_version(version), load=lambda _: model)
        app = create_app(
            log_settings(settings, Path(tmp)),
            features=FeastFeatureSource(settings),
            models=provider,
        )
        with TestClient(app) as client:
            while client.get("/ready").status_code != 200:
                time.sleep(0.05)
            scorer = app.state.service.scorer
            for mode, mode_units in units.items():
                stages: dict[str, list[float]] = {}
                n = counts[mode]
                warm = min(20, n)
                for step in range(warm + n):
                    unit = mode_units[(step if step < warm else step - warm) % len(mode_units)]
                    keys = [(t.user_id, t.merchant_id) for t in unit.transactions]
                    calls: dict[str, Callable[[], Any]] = {
                        "pyfunc_predict": lambda u=unit: packaging.predict_frame(model, u.frame),
                        "trained_model_predict_proba": lambda u=unit: trained.predict_proba(
                            u.frame
                        ),
                        "feast_lookup": lambda k=keys: source.fetch(k),
                        "scorer_score": lambda u=unit: scorer.score(u.transactions),
                        "app_request": lambda u=unit: client.post(
                            u.path, json=u.body, headers=headers
                        ),
                    }
                    for name, call in calls.items():
                        started = time.perf_counter()
                        call()
                        if step >= warm:
                            stages.setdefault(name, []).append(time.perf_counter() - started)
                transactions = len(mode_units[0].transactions)
                results[mode] = in_process_summary(stages) | {
                    "transactions_per_request": transactions
                }
    return results


def in_process_summary(stages: dict[str, list[float]]) -> dict[str, Any]:
    """Per-stage statistics and what the scoring path adds over the bare predict."""
    stats = {name: ms_stats(values) for name, values in stages.items()}
    p50 = {name: s["p50_ms"] for name, s in stats.items()}
    bare = p50["pyfunc_predict"]
    return {
        "requests": stats["pyfunc_predict"]["n"],
        "stages": stats,
        "overhead_p50_ms": {
            "scorer_minus_pyfunc_predict": round(p50["scorer_score"] - bare, 3),
            "app_request_minus_pyfunc_predict": round(p50["app_request"] - bare, 3),
            "scorer_minus_lookup_and_predict": round(
                p50["scorer_score"] - p50["feast_lookup"] - bare, 3
            ),
            "pyfunc_minus_trained_model": round(bare - p50["trained_model_predict_proba"], 3),
        },
        "ratios_p50": {
            "scorer_over_pyfunc_predict": ratio(p50["scorer_score"], bare),
            "app_request_over_pyfunc_predict": ratio(p50["app_request"], bare),
        },
    }


# --------------------------------------------------------------------------------------
# Report and main
# --------------------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """Where the numbers come from."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads_in_this_process": torch.get_num_threads(),
        "mlflow": mlflow.__version__,
        "fastapi": fastapi.__version__,
        "uvicorn": uvicorn.__version__,
        "httpx": httpx.__version__,
        "pandas": pd.__version__,
        "load_average_1m_at_end": round(os.getloadavg()[0], 2),
    }


def settings_used(settings: Settings) -> dict[str, Any]:
    """The settings that shape the serving path."""
    fields = (
        "home",
        "model_name",
        "mlflow_tracking_uri",
        "feast_env",
        "feast_registry",
        "feast_online_path",
        "serve_feature_timeout_ms",
        "serve_breaker_failures",
        "serve_poll_seconds",
        "serve_threshold",
        "serve_canary_weight",
        "serve_max_batch",
    )
    return {name: str(getattr(settings, name)) for name in fields}


def print_table(result: dict[str, Any]) -> None:
    """A short human-readable summary of ``result``."""
    load = result["load"]
    lines = [
        f"serving bench: {result['model']['name']} v{result['model']['version']}, "
        f"{load['concurrency']} clients, {load['rounds']} rounds x {load['duration_s']} s "
        f"per segment, pinned: {result['pinning']['pinned']}",
        f"{'mode':<8}{'server':<11}{'p50 ms':>9}{'p99 ms':>9}{'mean ms':>9}{'req/s':>9}"
        f"{'txn/s':>9}{'errors':>8}{'fallback':>10}{'lg cpu':>8}",
    ]
    for mode, pair in result["servers"]["results"].items():
        for name, r in pair.items():
            lat = r["latency"]
            lines.append(
                f"{mode:<8}{name:<11}{lat['p50_ms']:>9.2f}{lat['p99_ms']:>9.2f}"
                f"{lat['mean_ms']:>9.2f}{r['requests_per_s']:>9.1f}{r['transactions_per_s']:>9.1f}"
                f"{sum(r['errors'].values()):>8}{r['requests_with_features_fallback']:>10}"
                f"{r['load_generator_cpu_share']:>8.2f}"
            )
    r = result["servers"]["ratios"]
    for mode in ("single", "batch"):
        p50, p99, rps = (
            r[f"{mode}_{stat}_driftline_over_mlflow"]
            for stat in ("latency_p50", "latency_p99", "throughput")
        )
        lines.append(f"{mode} driftline/mlflow: latency p50 {p50}x, p99 {p99}x, throughput {rps}x")
    check = result["servers"]["score_check"]
    lines.append(f"scores agree: max |diff| {check['max_abs_score_difference']:.2e}")
    for mode, ip in result["in_process"].items():
        stages = ", ".join(
            f"{name} {st['p50_ms']:.2f}/{st['p99_ms']:.2f}" for name, st in ip["stages"].items()
        )
        lines.append(
            f"in-process {mode} ({ip['requests']} x {ip['transactions_per_request']} txn), "
            f"p50/p99 ms: {stages}"
        )
        lines.append(
            f"  scorer - pyfunc predict: {ip['overhead_p50_ms']['scorer_minus_pyfunc_predict']}"
            f" ms ({ip['ratios_p50']['scorer_over_pyfunc_predict']}x); app request - predict: "
            f"{ip['overhead_p50_ms']['app_request_minus_pyfunc_predict']} ms "
            f"({ip['ratios_p50']['app_request_over_pyfunc_predict']}x)"
        )
    print("\n".join(lines))


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
    # SIGTERM (a CI timeout, kill) as SystemExit, so the servers are still stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
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
