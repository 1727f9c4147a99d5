"""The serving benchmark's inputs: the model version and the request bodies.

:func:`choose_version` picks the version both servers serve; :func:`build_workload`
simulates ``--day``'s transactions, looks their features up once in the Feast online
store and pre-serializes the bodies of both servers (driftline gets transactions, the
``mlflow models serve`` baseline the model frame with those features already in it).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd

from driftline.core.settings import Settings
from driftline.lifecycle import registry
from driftline.serving import FeastFeatureSource
from driftline.serving.lookup import FeatureRow
from driftline.serving.replay import day_payloads
from driftline.serving.schemas import Transaction
from driftline.serving.scoring import model_frame
from driftline.simulator import SimulatorConfig

BASELINE = "mlflow"
CANDIDATE = "driftline"
SERVERS = (CANDIDATE, BASELINE)
#: The last day ``make demo`` ingests (its window is 2026-01-01 .. 2026-01-17, exclusive).
DEFAULT_DAY = date(2026, 1, 16)


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
    """The transactions of the run, their store features and the request bodies.

    ``mlflow models serve`` cannot compute fresh features (they come from driftline's
    event state), so its bodies carry them as NaN (missing: what the model's
    preprocessor imputes); ``check_body`` is its first batch with the fresh features
    driftline computes for that batch as its first request, so the scores can be
    compared on equal inputs.
    """

    payloads: list[dict[str, Any]]
    transactions: list[Transaction]
    features: list[FeatureRow]
    frames: list[pd.DataFrame]
    bodies: dict[str, dict[str, list[bytes]]] = field(default_factory=dict)
    check_body: bytes = b""


def lookup_features(settings: Settings, transactions: Sequence[Transaction]) -> list[FeatureRow]:
    """The online features of each transaction's (user, merchant), read once from Feast."""
    source = FeastFeatureSource(settings)
    rows: list[FeatureRow] = []
    for start in range(0, len(transactions), 256):
        chunk = transactions[start : start + 256]
        rows += source.fetch([(t.user_id, t.merchant_id) for t in chunk])
    return rows


def first_call_fresh(transactions: Sequence[Transaction]) -> list[dict[str, float]]:
    """The fresh features driftline computes for ``transactions`` as its first request.

    A fresh server's event state (under its temporary home) is empty: the first batch is
    recorded and read in one ``record_and_read``, as here on an empty SQLite state of the
    same kind, then turned into rows by the same function the server uses
    (:func:`driftline.data.events.record_and_compute`).
    """
    import tempfile

    from driftline.data.events import SQLiteEventStore, record_and_compute
    from driftline.serving.fresh import event_of

    events = [event_of(t) for t in transactions]
    with tempfile.TemporaryDirectory(prefix="driftline-bench-events-") as tmp:
        store = SQLiteEventStore(Path(tmp) / "events.db")
        try:
            return record_and_compute(store, events)
        finally:
            store.close()


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
    first = transactions[:size]
    check = frame_body(model_frame(first, features[:size], first_call_fresh(first)))
    return Workload(payloads, transactions, features, frames, bodies, check)


def describe_features(features: Sequence[FeatureRow]) -> dict[str, Any]:
    """How complete the looked-up store features are (a missing entity is all NaN)."""
    values = pd.DataFrame.from_records(features)
    return {
        "rows": len(values),
        "rows_with_all_features_missing": int(values.isna().all(axis=1).sum()),
        "share_of_missing_values": round(float(values.isna().to_numpy().mean()), 4),
    }
