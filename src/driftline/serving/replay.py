"""Traffic replay: send a simulated day of transactions to a scoring service.

The demo and the tests use it to put real load on ``driftline serve`` (or an
in-process app through FastAPI's ``TestClient``): the day's transactions come from
:func:`driftline.simulator.simulate_transactions`, so a replayed day is the same day the
pipeline ingests. Requests go out in timestamp order, paced to a request rate; pacing
uses the monotonic clock because this is load generation, not data selection.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import httpx
import numpy as np

from driftline.serving.api import API_KEY_HEADER
from driftline.simulator import SimulatorConfig, simulate_transactions

log = logging.getLogger(__name__)

#: Status key for requests that got no HTTP answer at all (connection refused, timeout).
TRANSPORT_ERROR = "transport_error"


@dataclass(frozen=True)
class ReplayResult:
    """What a replay sent and how the service answered.

    Counts are per transaction (a batch request of ``n`` counts ``n``); latencies are
    per request, measured by the client, in milliseconds.

    Attributes:
        day: The simulated day replayed.
        base_url: The service's base URL.
        sent: Transactions sent.
        requests: HTTP requests made.
        ok: Transactions answered with a score (HTTP 200).
        failed: Transactions not scored, by HTTP status (or ``transport_error``).
        variants: Scored transactions per serving variant (``champion``/``canary``).
        model_versions: Scored transactions per model version.
        latency_p50_ms: Median request latency (``None`` when nothing was sent).
        latency_p99_ms: 99th percentile request latency.
        seconds: Wall time of the replay.
    """

    day: date
    base_url: str
    sent: int
    requests: int
    ok: int
    failed: dict[str, int] = field(default_factory=dict)
    variants: dict[str, int] = field(default_factory=dict)
    model_versions: dict[str, int] = field(default_factory=dict)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the day as ISO 8601)."""
        return {
            "day": self.day.isoformat(),
            "base_url": self.base_url,
            "sent": self.sent,
            "requests": self.requests,
            "ok": self.ok,
            "failed": dict(self.failed),
            "variants": dict(self.variants),
            "model_versions": dict(self.model_versions),
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p99_ms": self.latency_p99_ms,
            "seconds": self.seconds,
        }


def day_payloads(
    config: SimulatorConfig, day: date, limit: int | None = None
) -> list[dict[str, Any]]:
    """The day's simulated transactions as JSON request bodies, in timestamp order.

    Args:
        config: Simulator configuration (the same one that wrote the landing files).
        day: The day to simulate.
        limit: Keep only the first ``limit`` transactions (``None``: all).

    Returns:
        One dict per transaction, times as ISO 8601 strings.
    """
    table, _ = simulate_transactions(config, day)
    table = table.sort_by([("ts", "ascending"), ("transaction_id", "ascending")])
    if limit is not None:
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        table = table.slice(0, limit)
    return [_json_ready(row) for row in table.to_pylist()]


def _json_ready(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}


def _chunks(items: list[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def replay_day(
    day: date,
    *,
    base_url: str,
    api_key: str,
    rate: float,
    config: SimulatorConfig,
    batch_size: int = 1,
    limit: int | None = None,
    client: httpx.Client | None = None,
) -> ReplayResult:
    """Send the simulated transactions of ``day`` to a scoring service.

    Args:
        day: The simulated day to replay.
        base_url: Service root, e.g. ``http://localhost:8000`` (``http://testserver``
            for a ``TestClient``).
        api_key: Value of the ``X-API-Key`` header.
        rate: Requests per second; ``<= 0`` sends as fast as the service answers.
        config: Simulator configuration.
        batch_size: 1 posts each transaction to ``/v1/score``; more posts chunks of
            that size to ``/v1/score/batch``.
        limit: Send only the first ``limit`` transactions of the day.
        client: HTTP client to use (e.g. FastAPI's ``TestClient``); one is created and
            closed here when ``None``.

    Returns:
        Counts, variants and latency percentiles of the replay.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    payloads = day_payloads(config, day, limit)
    root = base_url.rstrip("/")
    url = f"{root}/v1/score" if batch_size == 1 else f"{root}/v1/score/batch"
    own = client is None
    http = httpx.Client(timeout=30.0) if client is None else client
    headers = {API_KEY_HEADER: api_key}
    failed: Counter[str] = Counter()
    variants: Counter[str] = Counter()
    versions: Counter[str] = Counter()
    latencies: list[float] = []
    interval = 1.0 / rate if rate > 0 else 0.0
    requests = ok = 0
    started = time.monotonic()
    try:
        for chunk in _chunks(payloads, batch_size):
            if interval:
                # Fixed schedule from the start, so one slow answer does not lower the rate.
                wait = started + requests * interval - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
            body: Any = chunk[0] if batch_size == 1 else {"transactions": chunk}
            sent_at = time.monotonic()
            requests += 1
            try:
                reply = http.post(url, json=body, headers=headers)
            except httpx.TransportError as error:
                log.warning("replay request failed: %s", error)
                failed[TRANSPORT_ERROR] += len(chunk)
                continue
            latencies.append((time.monotonic() - sent_at) * 1000.0)
            if reply.status_code != httpx.codes.OK:
                failed[str(reply.status_code)] += len(chunk)
                continue
            answer = reply.json()
            scores = [answer] if batch_size == 1 else answer["scores"]
            ok += len(scores)
            variants.update(str(s["variant"]) for s in scores)
            versions.update(str(s["model_version"]) for s in scores)
    finally:
        if own:
            http.close()
    result = ReplayResult(
        day=day,
        base_url=base_url,
        sent=len(payloads),
        requests=requests,
        ok=ok,
        failed=dict(failed),
        variants=dict(variants),
        model_versions=dict(versions),
        latency_p50_ms=_percentile(latencies, 50),
        latency_p99_ms=_percentile(latencies, 99),
        seconds=time.monotonic() - started,
    )
    log.info(
        "replayed %s to %s: %d sent, %d ok, failed %s, variants %s",
        day,
        base_url,
        result.sent,
        result.ok,
        result.failed,
        result.variants,
    )
    return result
