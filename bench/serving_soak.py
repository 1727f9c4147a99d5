"""The serving benchmark's soak: driftline at saturation for a minute, its memory watched.

A closed loop keeps ``--soak-in-flight`` requests in flight (so the server is never
idle, and never offered more than it can answer, which an open loop at capacity would
do by chance), ``--soak-mode`` requests, for ``--soak-duration`` seconds after a short
warm-up. Meanwhile a thread samples the server process's resident memory (``VmRSS`` in
``/proc/<pid>/status``) once a second. The soak passes with no errors and a flat RSS:
``(max - min) / min`` of the samples taken during the measured time within
:data:`RSS_FLAT_WITHIN`.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serving_load import (
    Target,
    closed_loop,
    counter_change,
    server_counters,
    summarize,
    wait_breaker_not_open,
)

#: Largest relative RSS range of a flat soak.
RSS_FLAT_WITHIN = 0.10
#: Seconds between RSS samples.
SAMPLE_SECONDS = 1.0


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` in KiB (``None`` if it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return None


class RssSampler:
    """Samples a process's RSS every :data:`SAMPLE_SECONDS` on a thread, with times."""

    def __init__(self, pid: int) -> None:
        """Watch ``pid`` once :meth:`start` is called."""
        self.pid = pid
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def start(self) -> None:
        """Start sampling (the first sample at once)."""
        self._thread.start()

    def stop(self) -> None:
        """Stop sampling and wait for the thread."""
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = rss_kib(self.pid)
            if value is not None:
                self.samples.append((time.perf_counter(), value))
            self._stop.wait(SAMPLE_SECONDS)


def server_pid(base_url: str) -> int:
    """The pid driftline reports on ``/ready`` (the process answering, not a wrapper)."""
    return int(httpx.get(base_url + "/ready", timeout=30.0).json()["pid"])


def rss_summary(samples: list[tuple[float, int]], since: float) -> dict[str, Any]:
    """RSS at the start and end of the measured time, its range, and flatness."""
    values = [kib for at, kib in samples if at >= since]
    if len(values) < 2:
        return {"samples": len(values), "flat": None}
    mib = np.asarray(values, dtype=np.float64) / 1024.0
    low, high = float(mib.min()), float(mib.max())
    times = np.asarray([at for at, _ in samples if at >= since]) - since
    slope = float(np.polyfit(times, mib, 1)[0]) * 60.0 if len(values) > 2 else 0.0
    spread = (high - low) / low
    return {
        "samples": len(values),
        "first_mib": round(float(mib[0]), 1),
        "last_mib": round(float(mib[-1]), 1),
        "min_mib": round(low, 1),
        "max_mib": round(high, 1),
        "range_over_min": round(spread, 4),
        "slope_mib_per_min": round(slope, 2),
        "flat_within": RSS_FLAT_WITHIN,
        "flat": spread <= RSS_FLAT_WITHIN,
    }


def soak(
    target: Target, base_url: str, in_flight: int, warmup_s: float, duration_s: float
) -> dict[str, Any]:
    """Saturate driftline for ``duration_s``; errors, throughput, latency and RSS."""
    pid = server_pid(base_url)
    ready = wait_breaker_not_open(base_url, 15.0)
    sampler = RssSampler(pid)
    before = server_counters(base_url)
    sampler.start()
    measured_from = time.perf_counter() + warmup_s
    try:
        run = closed_loop(target, in_flight, warmup_s, duration_s)
    finally:
        sampler.stop()
    run.server = counter_change(before, server_counters(base_url))
    result = summarize(run)
    errors = sum(run.errors.values())
    rss = rss_summary(sampler.samples, measured_from)
    return {
        "mode": target.mode,
        "in_flight": in_flight,
        "warmup_s": warmup_s,
        "duration_s": duration_s,
        "server_pid": pid,
        **ready,
        "rss_before_warmup_mib": round(sampler.samples[0][1] / 1024.0, 1)
        if sampler.samples
        else None,
        "rss": rss,
        "result": result,
        "passed": errors == 0 and bool(rss.get("flat")),
    }
