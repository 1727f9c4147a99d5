"""The serving benchmark's report: where the numbers come from, and a short table."""

from __future__ import annotations

import os
import platform
from typing import Any

import fastapi
import httpx
import mlflow
import pandas as pd
import torch
import uvicorn

from driftline.core.settings import Settings


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
