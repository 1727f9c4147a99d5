"""The serving benchmark's load generators and what they measured.

* **Open loop** (:func:`open_loop`): requests are sent on a fixed schedule of send
  times drawn before the run (Poisson arrivals at a constant mean rate, seeded; or
  evenly spaced), whatever the server does. Latency is measured from the *scheduled*
  send time, so a request that had to wait because the server (or the client's
  connection pool) was behind counts that wait: no coordinated omission. The
  concurrency a cell reached is reported by Little's law (throughput x mean latency).
* **Closed loop** (:func:`closed_loop`): ``concurrency`` requests always in flight,
  each sent when one returns. The benchmark uses it only where saturation is the
  point: the capacity probe (the most requests per second a server answers) and the
  soak.

Both use :mod:`serving_http` (keep-alive connections, pre-built request bytes) on
uvloop when available. Before measuring, both servers' scores on the same batch are
compared (:func:`check_scores`).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import httpx
import numpy as np
from prometheus_client.parser import text_string_to_metric_families
from serving_http import ConnectionPool, HttpError, request_bytes
from serving_workload import BASELINE, CANDIDATE, SERVERS, Workload

from driftline.serving.api import API_KEY_HEADER

#: How a driftline score says its features came from the fallback (compact JSON).
FALLBACK_TRUE = b'"features_fallback":true'
#: Longest a request may take before it counts as an error.
REQUEST_TIMEOUT_S = 30.0
#: Most connections (so requests in flight) the load generator opens per server.
POOL_SIZE = 512
#: driftline counters read from ``/metrics`` before and after each run (their change).
SERVER_COUNTERS = (
    "driftline_feature_fallback",
    "driftline_scored_rows",
    "driftline_feature_lookups",
    "driftline_feature_store_reads",
    "driftline_feature_store_read_entities",
    "driftline_feature_store_failures",
    "driftline_feature_lookup_fallbacks",
    "driftline_forward_passes",
    "driftline_merged_requests",
    "driftline_admitted_requests",
    "driftline_shed_requests",
    "driftline_rate_limited",
    "driftline_event_store_calls",
    "driftline_event_store_events",
    "driftline_event_store_failures",
    "driftline_event_store_fallback_rows",
)
#: Of :data:`SERVER_COUNTERS`, those also counted per ``reason`` label (why rows fell
#: back: a store call that failed, and why; an open breaker; no free worker).
BY_REASON = (
    "driftline_feature_store_failures",
    "driftline_feature_lookup_fallbacks",
    "driftline_event_store_failures",
    "driftline_event_store_fallback_rows",
)
#: Call-duration histograms whose count and sum are read too (mean time per call).
HISTOGRAMS = ("driftline_feature_store_read_seconds", "driftline_event_store_call_seconds")
#: driftline_feature_breaker_state values.
BREAKER_STATES = {0.0: "closed", 1.0: "open", 2.0: "half_open"}
Arrivals = Literal["poisson", "uniform"]
T = TypeVar("T")


def ms_stats(seconds: Sequence[float]) -> dict[str, float | int | None]:
    """Count, p50, p90, p99, p99.9, mean and max of ``seconds`` in milliseconds."""
    if not seconds:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "mean_ms": None}
    values = np.asarray(seconds) * 1000.0
    out: dict[str, float | int | None] = {"n": len(values)}
    for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99), ("p999_ms", 99.9)):
        out[name] = round(float(np.percentile(values, q)), 3)
    out["mean_ms"] = round(float(values.mean()), 3)
    out["max_ms"] = round(float(values.max()), 3)
    return out


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator`` rounded, or ``None`` when either is missing or zero."""
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, 3)


@dataclass(frozen=True)
class Target:
    """Where and what one kind of run sends: pre-built requests of one server and mode."""

    server: str
    mode: str
    url: str
    requests: list[bytes]
    rows_per_request: int


@dataclass
class Run:
    """What one measured run saw (latencies in seconds, successful requests only).

    Attributes:
        latencies: Open loop: from the scheduled send time; closed loop: from the send.
        send_lag: Open loop: how late the client started each request (its event loop
            behind the schedule; a wait for a free connection comes after, and is in the
            latency only).
        window_s: From the first measured send (scheduled) to the last answer.
        peak_in_flight: Most requests outstanding at once (client side).
    """

    offered_rps: float | None = None
    sent: int = 0
    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    rows_ok: int = 0
    fallback_rows: int = 0
    latencies: list[float] = field(default_factory=list)
    send_lag: list[float] = field(default_factory=list)
    window_s: float = 0.0
    client_cpu_s: float = 0.0
    peak_in_flight: int = 0
    server: dict[str, float] = field(default_factory=dict)

    def record(self, status: int, body: bytes, rows: int, latency: float) -> None:
        """Count one answered request."""
        if status != 200:
            self.errors[str(status)] += 1
            return
        self.ok += 1
        self.rows_ok += rows
        self.latencies.append(latency)
        self.fallback_rows += body.count(FALLBACK_TRUE)


def _run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on uvloop when it is installed (as uvicorn does), else asyncio."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] brings it
        return asyncio.run(make())  # type: ignore[arg-type]
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(make())  # type: ignore[arg-type]


def send_offsets(
    rate: float, count: int, arrivals: Arrivals, rng: np.random.Generator
) -> np.ndarray:
    """``count`` send times (seconds from the start) at mean ``rate`` per second."""
    if arrivals == "poisson":
        gaps = rng.exponential(1.0 / rate, size=count)
    else:
        gaps = np.full(count, 1.0 / rate)
    gaps[0] = 0.0
    return np.cumsum(gaps)


async def _open_loop(
    target: Target,
    rate: float,
    warmup_s: float,
    duration_s: float,
    arrivals: Arrivals,
    seed: int,
) -> Run:
    warm = round(rate * warmup_s)
    count = max(1, round(rate * duration_s))
    offsets = send_offsets(rate, warm + count, arrivals, np.random.default_rng(seed))
    run = Run(offered_rps=rate)
    pool = ConnectionPool(target.url, POOL_SIZE, REQUEST_TIMEOUT_S)
    outstanding = 0
    last_done = 0.0

    async def one(index: int, scheduled: float) -> None:
        nonlocal outstanding, last_done
        measured = index >= warm
        outstanding += 1
        if measured:
            run.peak_in_flight = max(run.peak_in_flight, outstanding)
        started = time.perf_counter()
        try:
            reply = await pool.post(target.requests[index % len(target.requests)])
        except HttpError as error:
            if measured:
                run.errors[f"transport: {error}"[:60]] += 1
            return
        finally:
            outstanding -= 1
        done = time.perf_counter()
        if measured:
            last_done = max(last_done, done)
            run.send_lag.append(started - scheduled)
            run.record(reply.status, reply.body, target.rows_per_request, done - scheduled)

    start = time.perf_counter() + 0.02
    cpu_start = time.process_time()
    tasks = []
    for index, offset in enumerate(offsets):
        scheduled = start + float(offset)
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, scheduled)))
    await asyncio.gather(*tasks)
    run.client_cpu_s = time.process_time() - cpu_start
    run.sent = count
    first = start + float(offsets[warm]) if warm < len(offsets) else start
    run.window_s = max(last_done, start + float(offsets[-1])) - first
    pool.close()
    return run


def open_loop(
    target: Target,
    rate: float,
    warmup_s: float,
    duration_s: float,
    arrivals: Arrivals = "poisson",
    seed: int = 7,
) -> Run:
    """``rate`` requests per second on a fixed schedule; ``warmup_s`` of them unrecorded."""
    return _run_async(lambda: _open_loop(target, rate, warmup_s, duration_s, arrivals, seed))


async def _closed_loop(target: Target, concurrency: int, warmup_s: float, duration_s: float) -> Run:
    run = Run()
    pool = ConnectionPool(target.url, concurrency, REQUEST_TIMEOUT_S)
    counter = iter(range(1 << 62))
    begin = time.perf_counter()
    measure_from = begin + warmup_s
    end = measure_from + duration_s
    cpu_start = 0.0

    async def worker() -> None:
        while (sent := time.perf_counter()) < end:
            index = next(counter)
            measured = sent >= measure_from
            try:
                reply = await pool.post(target.requests[index % len(target.requests)])
            except HttpError as error:
                if measured:
                    run.errors[f"transport: {error}"[:60]] += 1
                continue
            if measured:
                run.sent += 1
                run.record(
                    reply.status, reply.body, target.rows_per_request, time.perf_counter() - sent
                )

    async def cpu_mark() -> None:
        nonlocal cpu_start
        await asyncio.sleep(max(0.0, measure_from - time.perf_counter()))
        cpu_start = time.process_time()

    await asyncio.gather(cpu_mark(), *(worker() for _ in range(concurrency)))
    run.client_cpu_s = time.process_time() - cpu_start
    run.window_s = time.perf_counter() - measure_from
    run.peak_in_flight = concurrency
    pool.close()
    return run


def closed_loop(target: Target, concurrency: int, warmup_s: float, duration_s: float) -> Run:
    """``concurrency`` requests always in flight; only those sent after ``warmup_s`` count."""
    return _run_async(lambda: _closed_loop(target, concurrency, warmup_s, duration_s))


def server_counters(base_url: str) -> dict[str, float]:
    """driftline's :data:`SERVER_COUNTERS` now, from ``/metrics``.

    Each counter summed over its labels; those of :data:`BY_REASON` also per reason
    (``name{reason=...}``), and the :data:`HISTOGRAMS`' ``_count`` and ``_sum``.
    """
    text = httpx.get(base_url + "/metrics", timeout=30.0).text
    totals = dict.fromkeys(SERVER_COUNTERS, 0.0)
    for family in text_string_to_metric_families(text):
        if family.name in HISTOGRAMS:
            for sample in family.samples:
                if sample.name.endswith(("_count", "_sum")):
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        if family.name not in SERVER_COUNTERS:
            continue
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            totals[family.name] += sample.value
            if family.name in BY_REASON and "reason" in sample.labels:
                key = f"{family.name}{{reason={sample.labels['reason']}}}"
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def breaker_state(base_url: str) -> float | None:
    """driftline's feature-store breaker now: 0 closed, 1 open, 2 half-open."""
    text = httpx.get(base_url + "/metrics", timeout=30.0).text
    for family in text_string_to_metric_families(text):
        if family.name == "driftline_feature_breaker_state" and family.samples:
            return float(family.samples[0].value)
    return None


def wait_breaker_not_open(base_url: str, timeout_s: float) -> dict[str, Any]:
    """Wait (up to ``timeout_s``) until the breaker is not open, so a run starts healthy.

    An open breaker left by the previous run would answer this run's first seconds from
    the fallback without asking the store. Half-open is enough: the next lookup is the
    trial call.
    """
    started = time.perf_counter()
    first = state = breaker_state(base_url)
    while state == 1.0 and time.perf_counter() - started < timeout_s:
        time.sleep(0.25)
        state = breaker_state(base_url)
    return {
        "breaker_at_start": BREAKER_STATES.get(first, "unknown") if first is not None else None,
        "waited_s": round(time.perf_counter() - started, 2),
    }


def counter_change(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """What each counter added between two scrapes (names without ``driftline_``)."""
    return {
        name.removeprefix("driftline_"): after[name] - before.get(name, 0.0)
        for name in after
        if after[name] != before.get(name, 0.0)
    }


def targets(
    base_urls: dict[str, str], workload: Workload, args: argparse.Namespace
) -> dict[str, dict[str, Target]]:
    """``targets[mode][server]``: URL and pre-built requests of each kind of run."""
    json_only = {"Content-Type": "application/json"}
    headers = {CANDIDATE: {**json_only, API_KEY_HEADER: args.api_key}, BASELINE: json_only}
    paths = {
        CANDIDATE: {"single": "/v1/score", "batch": "/v1/score/batch"},
        BASELINE: {"single": "/invocations", "batch": "/invocations"},
    }
    sizes = {"single": 1, "batch": args.batch_size}
    plan: dict[str, dict[str, Target]] = {}
    for mode in ("single", "batch"):
        plan[mode] = {}
        for name in SERVERS:
            url = base_urls[name] + paths[name][mode]
            plan[mode][name] = Target(
                server=name,
                mode=mode,
                url=url,
                requests=[
                    request_bytes(url, body, headers[name]) for body in workload.bodies[name][mode]
                ],
                rows_per_request=sizes[mode],
            )
    return plan


def post_driftline_batch(
    url: str, body: bytes, key: str, attempts: int = 10
) -> list[dict[str, Any]]:
    """driftline's scores of one batch, retried (briefly) until no row used the fallback."""
    scores: list[dict[str, Any]] = []
    for _ in range(attempts):
        reply = httpx.post(
            url,
            content=body,
            headers={API_KEY_HEADER: key, "content-type": "application/json"},
            timeout=60.0,
        )
        reply.raise_for_status()
        scores = reply.json()["scores"]
        if not any(s["features_fallback"] for s in scores):
            break
        time.sleep(0.5)
    return scores


def check_scores(base_urls: dict[str, str], workload: Workload, key: str) -> dict[str, Any]:
    """Both servers' scores on the first batch, compared (same model, same inputs?).

    Sent as driftline's first scoring request, so its fresh features are those of
    ``workload.check_body`` (see :class:`Workload`).
    """
    ours = post_driftline_batch(
        base_urls[CANDIDATE] + "/v1/score/batch", workload.bodies[CANDIDATE]["batch"][0], key
    )
    theirs = httpx.post(
        base_urls[BASELINE] + "/invocations",
        content=workload.check_body,
        headers={"content-type": "application/json"},
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
        "driftline_answered_by": sorted({s.get("answered_by", "?") for s in ours}),
    }


def summarize(run: Run) -> dict[str, Any]:
    """A run's summary: throughput, latency, errors, fallback rows, Little's-law concurrency."""
    total = run.ok + sum(run.errors.values())
    rps = run.ok / run.window_s if run.window_s > 0 else None
    latency = ms_stats(run.latencies)
    mean_s = (latency["mean_ms"] or 0.0) / 1000.0
    out: dict[str, Any] = {
        "offered_requests_per_s": round(run.offered_rps, 2) if run.offered_rps else None,
        "requests_per_s": round(rps, 2) if rps else None,
        "transactions_per_s": round(run.rows_ok / run.window_s, 2) if run.window_s else None,
        "in_flight_littles_law": round(rps * mean_s, 2) if rps else None,
        "peak_in_flight": run.peak_in_flight,
        "latency": latency,
        "requests_ok": run.ok,
        "errors": dict(run.errors),
        "error_rate": round(sum(run.errors.values()) / total, 6) if total else None,
        "rows_ok": run.rows_ok,
        "fallback_rows": run.fallback_rows,
        "fallback_row_share": round(run.fallback_rows / run.rows_ok, 6) if run.rows_ok else None,
        "window_s": round(run.window_s, 3),
        "load_generator_cpu_share": round(run.client_cpu_s / run.window_s, 3)
        if run.window_s
        else None,
    }
    if run.send_lag:
        lag = np.asarray(run.send_lag) * 1000.0
        out["send_lag_ms"] = {
            "p50": round(float(np.percentile(lag, 50)), 3),
            "p99": round(float(np.percentile(lag, 99)), 3),
        }
    if run.server:
        out["server_counters"] = run.server
    return out
