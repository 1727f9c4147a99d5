"""The serving benchmark's in-process section: what driftline's scoring path costs.

On a warm process, per request (single transactions, then ``--batch-size`` batches),
each stage in turn (in a shuffled order per request) on the same loaded model and the
same online store:

* ``lean_forward``: the lean model's forward pass alone (NumPy preprocessing and
  TorchScript, :meth:`driftline.training.lean.LeanModel.predict_columns`) on model
  columns built beforehand;
* ``online_read``: one Feast online read of the request's (user, merchant) pairs
  (:meth:`FeastFeatureSource.fetch`, the store call alone);
* ``read_plus_forward``: the bare work, timed as one unit: that read, then that
  forward pass;
* ``guarded_events``: the scorer's event-store call alone (:class:`GuardedEvents`
  ``begin`` + ``finish``: one ``record_and_read`` of the request's transactions in the
  SQLite event state under the benchmark's temporary home, and the fresh features
  computed from its answer). Units repeat, so after the warm-up a transaction's event is
  already stored and its insert is ignored (by id); the read and the trim still run;
* ``parse_validate``: the request body (bytes) parsed and validated into the request
  model (``Transaction`` or ``Batch``: the request-time checks of every field);
* ``event_store``: the SQLite event store's ``record_and_read`` of the request's
  transactions alone, on a store of the benchmark's own (under its temporary folder,
  every unit's events already stored by an untimed first call: the steady state of
  ``guarded_events``);
* ``fresh_compute``: :func:`driftline.core.fresh.fresh_features` of each transaction from
  that store's answer (read once beforehand), the computation alone;
* ``response``: the response body built from the scorer's answer for the unit
  (``Score`` or ``BatchScores`` to JSON);
* ``guarded_lookup``: the scorer's lookup alone (:meth:`GuardedFeatures.lookup`: the
  hand-off to a feature worker, the same read, timeout and breaker bookkeeping);
* ``scorer_score``: driftline's in-process scoring path, :meth:`Scorer.score`: the
  coalesced, guarded lookup (timeout, breaker), model columns, routing, the
  micro-batcher, the forward pass, the fallback chain's checks, the prediction log
  and the metrics;
* ``pyfunc_predict``: the MLflow pyfunc's predict on a pandas frame (what
  ``mlflow models serve`` runs per request, for reference);
* ``app_request``: a full request through the app with FastAPI's ``TestClient`` (no
  network; the test client itself costs about a millisecond, for reference).

The last two run in a loop of their own after the others: pandas and the test client
churn through memory and leave the caches cold for whatever runs next, which taxed the
store read beside them by milliseconds. The bare read uses the very store object the
scorer's guarded lookup wraps.

Rows the guarded stages answered from the feature fallback (a timed-out store call,
an open breaker) are counted: such a request skips the store read, so its time says
nothing about the scoring path's overhead. The goal is on the overhead at p99:
``p99(scorer_score) - p99(read_plus_forward)`` for single transactions (also given at
p50 and for batches).
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving_load import ms_stats, ratio
from serving_workload import Workload, log_settings, pinned_version

from driftline.core.fresh import Event, fresh_features
from driftline.core.settings import Settings
from driftline.data.events import History, SQLiteEventStore
from driftline.serving import FeastFeatureSource, ModelProvider, create_app
from driftline.serving.api import API_KEY_HEADER
from driftline.serving.fresh import event_of
from driftline.serving.models import as_scorable
from driftline.serving.schemas import Batch, BatchScores, Score, Transaction
from driftline.serving.scoring import model_columns, model_frame
from driftline.training import lean, packaging

#: Untimed requests of each kind before the timed ones.
WARM_REQUESTS = 50
#: Seed of the per-unit stage order.
ORDER_SEED = 13


@dataclass(frozen=True)
class Unit:
    """One request's worth of work for the in-process section."""

    transactions: list[Transaction]
    columns: dict[str, Any]
    frame: Any
    path: str
    body: dict[str, Any]
    raw: bytes = b""
    events: tuple[Event, ...] = ()


def in_process_units(workload: Workload, batch_size: int) -> dict[str, list[Unit]]:
    """Single-transaction units and ``batch_size`` units over the workload."""
    txns, payloads, features = workload.transactions, workload.payloads, workload.features
    single = [
        Unit([t], model_columns([t], [f]), frame, "/v1/score", p, _raw(p), (event_of(t),))
        for t, f, frame, p in zip(txns, features, workload.frames, payloads, strict=True)
    ]
    batch = [
        Unit(
            txns[i : i + batch_size],
            model_columns(txns[i : i + batch_size], features[i : i + batch_size]),
            model_frame(txns[i : i + batch_size], features[i : i + batch_size]),
            "/v1/score/batch",
            body := {"transactions": payloads[i : i + batch_size]},
            _raw(body),
            tuple(event_of(t) for t in txns[i : i + batch_size]),
        )
        for i in range(0, len(txns) - batch_size + 1, batch_size)
    ]
    return {"single": single, "batch": batch}


def _raw(body: dict[str, Any]) -> bytes:
    """A request body as the client sends it."""
    return json.dumps(body).encode()


def parse_validate(unit: Unit) -> Transaction | Batch:
    """The unit's body parsed and validated into its request model."""
    model = Batch if unit.path.endswith("/batch") else Transaction
    return model.model_validate_json(unit.raw)


def response_body(unit: Unit, scores: list[Score]) -> str:
    """The response body of ``scores`` (one ``Score``, or ``BatchScores`` for a batch)."""
    if unit.path.endswith("/batch"):
        return str(BatchScores(scores=scores).model_dump_json())
    return str(scores[0].model_dump_json())


def in_process(
    settings: Settings, version: str, workload: Workload, args: argparse.Namespace
) -> dict[str, Any]:
    """Per request: the bare read + forward pass against driftline's scoring path."""
    from fastapi.testclient import TestClient

    pyfunc = packaging.load_version(settings, version)
    found = lean.load_version(settings, version)
    scorable = found if found is not None else as_scorable(pyfunc)
    source = FeastFeatureSource(settings)  # the scorer's store too: the same reads
    headers = {API_KEY_HEADER: args.api_key}
    units = in_process_units(workload, args.batch_size)
    counts = {"single": args.in_process, "batch": max(1, args.in_process // 8)}
    results: dict[str, Any] = {"lean_form": found is not None}
    with tempfile.TemporaryDirectory(prefix="driftline-serving-bench-log-") as tmp:
        provider = ModelProvider(settings, resolve=pinned_version(version), load=lambda _: scorable)
        app = create_app(log_settings(settings, Path(tmp)), features=source, models=provider)
        with TestClient(app) as client:  # its start-up warms the store up
            while client.get("/ready").status_code != 200:
                time.sleep(0.05)
            scorer = app.state.service.scorer

            def keys(unit: Unit) -> list[tuple[int, int]]:
                return [(t.user_id, t.merchant_id) for t in unit.transactions]

            def bare(unit: Unit) -> None:
                source.fetch(keys(unit))
                scorable.predict_columns(unit.columns)

            store = SQLiteEventStore(Path(tmp) / "bench-events" / "events.db")
            # Untimed: every unit's events stored, its answer and its scores kept.
            histories: dict[int, list[History]] = {
                id(u): store.record_and_read(u.events) for us in units.values() for u in us
            }
            answers = {id(u): scorer.score(u.transactions) for us in units.values() for u in us}

            def fresh(unit: Unit) -> list[dict[str, float]]:
                return [
                    fresh_features(event, users, merchants)
                    for event, (users, merchants) in zip(
                        unit.events, histories[id(unit)], strict=True
                    )
                ]

            for mode, mode_units in units.items():
                path: dict[str, Callable[[Unit], Any]] = {
                    "lean_forward": lambda u: scorable.predict_columns(u.columns),
                    "online_read": lambda u: source.fetch(keys(u)),
                    "read_plus_forward": bare,
                    "parse_validate": parse_validate,
                    "event_store": lambda u: store.record_and_read(u.events),
                    "fresh_compute": fresh,
                    "response": lambda u: response_body(u, answers[id(u)]),
                    "guarded_lookup": lambda u: scorer.features.lookup(keys(u)),
                    "guarded_events": lambda u: fresh_rows(scorer, u),
                    "scorer_score": lambda u: scorer.score(u.transactions),
                }
                reference: dict[str, Callable[[Unit], Any]] = {
                    "pyfunc_predict": lambda u: packaging.predict_frame(pyfunc, u.frame),
                    "app_request": lambda u: client.post(u.path, json=u.body, headers=headers),
                }
                stages, fallbacks = _time_stages(path, mode_units, counts[mode])
                stages |= _time_stages(reference, mode_units, counts[mode])[0]
                rows = len(mode_units[0].transactions)
                results[mode] = in_process_summary(stages) | {
                    "transactions_per_request": rows,
                    "fallback_rows": fallbacks,
                    "timed_rows_per_stage": rows * counts[mode],
                }
            store.close()
    return results


def fresh_rows(scorer: Any, unit: Unit) -> Any:
    """The scorer's event-store call for ``unit`` (begin, then finish: the whole call)."""
    return scorer.events.finish(scorer.events.begin(unit.transactions))


def _fallback_rows(name: str, returned: Any) -> int:
    """Rows of a timed call that were answered from the feature fallback."""
    if name == "scorer_score":
        return sum(score.features_fallback for score in returned)
    if name == "guarded_lookup":
        return len(returned.rows) if returned.fallback else 0
    if name == "guarded_events":
        return len(returned.rows) if returned.fallback else 0
    return 0


def _time_stages(
    calls: dict[str, Callable[[Unit], Any]], units: list[Unit], count: int
) -> tuple[dict[str, list[float]], dict[str, int]]:
    """Seconds per call of each stage, and fallback rows of the guarded stages.

    Every unit goes through every stage, in a shuffled order per unit, so all stages see
    the same machine and none always runs right after the same other one (a stage that
    leaves threads waking up or caches cold would otherwise tax its successor).
    """
    stages: dict[str, list[float]] = {name: [] for name in calls}
    fallbacks = {name: 0 for name in ("scorer_score", "guarded_lookup", "guarded_events")}
    rng = random.Random(ORDER_SEED)
    names = list(calls)
    for step in range(WARM_REQUESTS + count):
        unit = units[step % len(units)]
        rng.shuffle(names)  # no stage always follows the same one (caches, threads)
        for name in names:
            call = calls[name]
            started = time.perf_counter()
            returned = call(unit)
            if step >= WARM_REQUESTS:
                stages[name].append(time.perf_counter() - started)
                if name in fallbacks:
                    fallbacks[name] += _fallback_rows(name, returned)
    return stages, fallbacks


def in_process_summary(stages: dict[str, list[float]]) -> dict[str, Any]:
    """Per-stage statistics and the scoring path's overhead over read + forward."""
    stats = {name: ms_stats(values) for name, values in stages.items()}
    path, bare = stats["scorer_score"], stats["read_plus_forward"]
    return {
        "requests": bare["n"],
        "stages": stats,
        "overhead_ms": {
            "p50": round(float(path["p50_ms"] or 0) - float(bare["p50_ms"] or 0), 3),
            "p99": round(float(path["p99_ms"] or 0) - float(bare["p99_ms"] or 0), 3),
            "definition": "scorer_score minus read_plus_forward, at the same percentile",
        },
        "ratios_p50": {
            "scorer_over_read_plus_forward": ratio(path["p50_ms"], bare["p50_ms"]),
            "pyfunc_predict_over_lean_forward": ratio(
                stats["pyfunc_predict"]["p50_ms"], stats["lean_forward"]["p50_ms"]
            ),
        },
    }
