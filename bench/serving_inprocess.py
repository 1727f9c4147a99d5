"""The serving benchmark's in-process section: where a request's time goes.

For single transactions on a warm process it times the bare pyfunc predict (MLflow schema
check, preprocessing, torch forward), the wrapped model's ``predict_proba`` without
MLflow, the Feast online lookup alone, ``Scorer.score`` (lookup, model frame, routing,
predict, prediction log, metrics) and a full request through the app with FastAPI's
``TestClient`` (no network), and what the scoring path adds over the bare predict; the
same for ``--batch-size`` batches.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from serving_load import ms_stats, ratio
from serving_workload import Workload, log_settings, pinned_version

from driftline.core.settings import Settings
from driftline.serving import FeastFeatureSource, ModelProvider, create_app
from driftline.serving.api import API_KEY_HEADER
from driftline.serving.schemas import Transaction
from driftline.serving.scoring import model_frame
from driftline.training import packaging


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
