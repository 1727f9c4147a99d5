"""The serving benchmark's load generator and what it measured.

A closed loop keeps ``--concurrency`` requests in flight (httpx, keep-alive) for
``--duration`` seconds per segment after ``--warmup`` seconds unrecorded; segments of
single-transaction and batch requests run on both servers, interleaved over
``--rounds`` rounds with alternating order. Before measuring, both servers' scores on
the same batch are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import numpy as np
from serving_workload import BASELINE, CANDIDATE, SERVERS, Workload

from driftline.serving.api import API_KEY_HEADER


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


def targets(
    base_urls: dict[str, str], workload: Workload, args: argparse.Namespace
) -> dict[str, dict[str, Target]]:
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
                url=base_urls[name] + paths[name][mode],
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
