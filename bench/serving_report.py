"""The serving benchmark's report: where the numbers come from, the goals, the tables.

The goals (issue 13, "Benchmark"), judged by :func:`goals` on the result:

* ``throughput``: per mode, driftline's capacity (closed-loop probe) at least
  :data:`THROUGHPUT_FACTOR` times mlflow's, **and** driftline's p99 lower than mlflow's
  in every open-loop cell (same target concurrency);
* ``fallback_rows``: at most :data:`MAX_FALLBACK_SHARE` of driftline's rows answered
  from the feature fallback, in every open-loop cell and in the soak;
* ``in_process_overhead``: ``p99(Scorer.score) - p99(online read + lean forward)`` for
  single transactions at most :data:`MAX_OVERHEAD_P99_MS`, with no timed scoring row
  answered from the feature fallback (it would have skipped the read);
* ``soak``: no errors and RSS flat (see :mod:`serving_soak`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import fastapi
import httpx
import mlflow
import pandas as pd
import torch
import uvicorn
from bench_common import host
from serving_load import ratio
from serving_workload import BASELINE, CANDIDATE

from driftline.core.settings import Settings


def machine_info() -> dict[str, Any]:
    """Where the numbers come from."""
    return host() | {
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
        "serve_batch_window_ms",
        "serve_batch_max_rows",
        "serve_feature_workers",
        "serve_max_in_flight",
        "serve_max_queued",
        "serve_queue_timeout_ms",
        "serve_rate_limit_per_second",
    )
    return {name: str(getattr(settings, name)) for name in fields}


THROUGHPUT_FACTOR = 3.0
MAX_FALLBACK_SHARE = 0.001
MAX_OVERHEAD_P99_MS = 1.5
MODES = ("single", "batch")


def _throughput_goal(modes: dict[str, Any]) -> dict[str, Any]:
    per_mode: dict[str, Any] = {}
    for mode, found in modes.items():
        capacity = found["capacity"]
        factor = ratio(capacity[CANDIDATE]["requests_per_s"], capacity[BASELINE]["requests_per_s"])
        cells = found["open_loop"]
        p99 = {
            level: (
                cells[CANDIDATE][level]["latency"]["p99_ms"],
                cells[BASELINE][level]["latency"]["p99_ms"],
            )
            for level in cells[CANDIDATE]
        }
        lower = all(
            ours is not None and theirs is not None and ours < theirs
            for ours, theirs in p99.values()
        )
        per_mode[mode] = {
            "capacity_ratio_driftline_over_mlflow": factor,
            "p99_ms_driftline_vs_mlflow_by_in_flight": {k: list(v) for k, v in p99.items()},
            "p99_lower_at_every_level": lower,
            "passed": factor is not None and factor >= THROUGHPUT_FACTOR and lower,
        }
    return {
        "goal": f"capacity >= {THROUGHPUT_FACTOR:g}x mlflow's, with a lower p99 at every "
        "in-flight level, single and batch",
        "per_mode": per_mode,
        "passed": all(m["passed"] for m in per_mode.values()),
    }


def _fallback_goal(modes: dict[str, Any], soaked: dict[str, Any]) -> dict[str, Any]:
    shares = {
        f"{mode}@{level}": cell["fallback_row_share"]
        for mode, found in modes.items()
        for level, cell in found["open_loop"][CANDIDATE].items()
    }
    shares["soak"] = soaked["result"]["fallback_row_share"]
    worst = max((s for s in shares.values() if s is not None), default=None)
    return {
        "goal": f"<= {MAX_FALLBACK_SHARE:.1%} of driftline's rows from the feature fallback "
        "in every open-loop cell and the soak",
        "share_by_cell": shares,
        "worst": worst,
        "passed": worst is not None and worst <= MAX_FALLBACK_SHARE,
    }


def goals(result: dict[str, Any]) -> dict[str, Any]:
    """Each goal with the numbers it was judged on and ``passed``."""
    modes = result["servers"]["modes"]
    soaked = result["servers"]["soak"]
    single = result["in_process"]["single"]
    overhead = single["overhead_ms"]["p99"]
    inproc_fallback = single["fallback_rows"]["scorer_score"]
    judged = {
        "throughput": _throughput_goal(modes),
        "fallback_rows": _fallback_goal(modes, soaked),
        "in_process_overhead": {
            "goal": f"p99(Scorer.score) - p99(online read + lean forward) <= "
            f"{MAX_OVERHEAD_P99_MS} ms, single transactions",
            "overhead_p99_ms": overhead,
            "overhead_p50_ms": single["overhead_ms"]["p50"],
            "scorer_fallback_rows": inproc_fallback,
            "passed": overhead <= MAX_OVERHEAD_P99_MS and inproc_fallback == 0,
        },
        "soak": {
            "goal": f"{soaked['duration_s']:g} s at saturation: 0 errors, RSS flat within "
            f"{soaked['rss']['flat_within']:.0%}",
            "errors": sum(soaked["result"]["errors"].values()),
            "rss_range_over_min": soaked["rss"].get("range_over_min"),
            "passed": soaked["passed"],
        },
    }
    return judged | {"all_passed": all(g["passed"] for g in judged.values())}


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def cell_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per mode, server and open-loop level: the table's cells as strings."""
    rows = []
    for mode, found in result["servers"]["modes"].items():
        for name in (CANDIDATE, BASELINE):
            for level, cell in found["open_loop"][name].items():
                fallback = None if name == BASELINE else 100 * (cell["fallback_row_share"] or 0)
                rows.append(
                    [
                        mode,
                        name,
                        level,
                        _fmt(cell["in_flight_littles_law"]),
                        _fmt(cell["requests_per_s"]),
                        _fmt(cell["transactions_per_s"], 0),
                        _fmt(cell["latency"]["p50_ms"], 2),
                        _fmt(cell["latency"]["p99_ms"], 2),
                        _fmt(100 * (cell["error_rate"] or 0), 2),
                        _fmt(fallback, 2),
                    ]
                )
    return rows


def capacity_rows(result: dict[str, Any]) -> list[list[str]]:
    """Per mode and server: the closed-loop capacity and at which in-flight level."""
    rows = []
    for mode, found in result["servers"]["modes"].items():
        for name in (CANDIDATE, BASELINE):
            cap = found["capacity"][name]
            best = found["closed_loop"][name][str(cap["at_in_flight"])]
            rows.append(
                [
                    mode,
                    name,
                    _fmt(cap["requests_per_s"]),
                    _fmt(cap["transactions_per_s"], 0),
                    str(cap["at_in_flight"]),
                    _fmt(best["latency"]["p99_ms"], 2),
                    _fmt(100 * (best["error_rate"] or 0), 2),
                ]
            )
    return rows


HEADER = [
    "mode",
    "server",
    "target in flight",
    "in flight (Little)",
    "req/s",
    "txn/s",
    "p50 ms",
    "p99 ms",
    "errors %",
    "fallback rows %",
]
CAPACITY_HEADER = [
    "mode",
    "server",
    "capacity req/s",
    "txn/s",
    "at in flight",
    "p99 ms",
    "errors %",
]


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "---:|" * (len(header) - 2)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def markdown_table(result: dict[str, Any]) -> str:
    """The README's tables: every cell, then the goals with pass/fail."""
    lines = [*_markdown(HEADER, cell_rows(result)), ""]
    lines += _markdown(CAPACITY_HEADER, capacity_rows(result))
    judged = result["goals"]
    lines += ["", "| goal | measured | result |", "|---|---|---|"]
    for mode, m in judged["throughput"]["per_mode"].items():
        lines.append(
            f"| {mode}: capacity >= 3x mlflow, lower p99 at every level | "
            f"{_fmt(m['capacity_ratio_driftline_over_mlflow'], 2)}x; p99 lower everywhere: "
            f"{'yes' if m['p99_lower_at_every_level'] else 'no'} | "
            f"{'pass' if m['passed'] else 'FAIL'} |"
        )
    fb = judged["fallback_rows"]
    lines.append(
        f"| fallback rows <= 0.1% in every cell | worst {_fmt(100 * (fb['worst'] or 0), 3)}% | "
        f"{'pass' if fb['passed'] else 'FAIL'} |"
    )
    ov = judged["in_process_overhead"]
    lines.append(
        f"| in-process overhead p99 <= 1.5 ms | {_fmt(ov['overhead_p99_ms'], 3)} ms "
        f"(p50 {_fmt(ov['overhead_p50_ms'], 3)} ms; {ov['scorer_fallback_rows']} fallback rows) | "
        f"{'pass' if ov['passed'] else 'FAIL'} |"
    )
    sk = judged["soak"]
    lines.append(
        f"| soak: 0 errors, RSS flat within 10% | {sk['errors']} errors, RSS range "
        f"{_fmt(100 * (sk['rss_range_over_min'] or 0), 1)}% | "
        f"{'pass' if sk['passed'] else 'FAIL'} |"
    )
    return "\n".join(lines)


def print_table(result: dict[str, Any]) -> None:
    """A short plain-text summary of ``result``."""
    widths = [7, 10, 9, 9, 9, 10, 9, 9, 9, 10]
    names = ["mode", "server", "target", "L", "req/s", "txn/s", "p50", "p99", "err%", "fb%"]
    lines = [
        f"serving bench: {result['model']['name']} v{result['model']['version']} "
        f"(lean form: {result['model']['lean_form']}), pinned: {result['pinning']['pinned']}",
        "".join(f"{n:>{w}}" for n, w in zip(names, widths, strict=True)),
    ]
    for row in cell_rows(result):
        lines.append("".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True)))
    for row in capacity_rows(result):
        lines.append("capacity " + " ".join(row))
    check = result["servers"]["score_check"]
    lines.append(f"scores agree: max |diff| {check['max_abs_score_difference']:.2e}")
    for mode in MODES:
        ip = result["in_process"][mode]
        stages = ", ".join(
            f"{name} {st['p50_ms']:.3f}/{st['p99_ms']:.3f}" for name, st in ip["stages"].items()
        )
        lines.append(f"in-process {mode} p50/p99 ms: {stages}")
        lines.append(f"  overhead over read + forward: {ip['overhead_ms']}")
    soaked = result["servers"]["soak"]
    lines.append(
        f"soak: {soaked['result']['requests_per_s']} req/s, errors {soaked['result']['errors']}, "
        f"rss {soaked['rss']}"
    )
    lines.append(f"goals: {json.dumps(result['goals'], indent=1)}")
    print("\n".join(lines))
