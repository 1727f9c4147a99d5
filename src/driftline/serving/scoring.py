"""Score transactions: model frame, canary split, prediction, log and metrics.

The model frame holds the request-time fields of each transaction plus the store
features of its user and merchant (``driftline.core.columns``); the pyfunc applies
the preprocessing saved with the model. Each request takes one snapshot of the serving
models, so a swap during the request never mixes versions within it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from typing import Any

import numpy as np
import pandas as pd

from driftline.core.columns import MODEL_INPUTS, NUMERIC, REQUEST_CATEGORICAL, STORE_NUMERIC
from driftline.data.predictions import PredictionLog
from driftline.serving.lookup import FeatureRow, GuardedFeatures
from driftline.serving.metrics import Metrics
from driftline.serving.models import ModelProvider, ModelSet
from driftline.serving.routing import choose_variant
from driftline.serving.schemas import Score, Transaction, Variant
from driftline.training import packaging

log = logging.getLogger(__name__)


class NotReadyError(RuntimeError):
    """No champion model is loaded yet."""


def model_frame(
    transactions: Sequence[Transaction], features: Sequence[FeatureRow]
) -> pd.DataFrame:
    """The ``MODEL_INPUTS`` of each transaction (numeric columns as float64)."""
    rows: list[dict[str, Any]] = []
    for txn, stored in zip(transactions, features, strict=True):
        row: dict[str, Any] = {
            "amount": txn.amount,
            "hour_of_day": float(txn.ts.astimezone(UTC).hour),
            **{name: stored[name] for name in STORE_NUMERIC},
            **{name: getattr(txn, name) for name in REQUEST_CATEGORICAL},
        }
        rows.append(row)
    frame = pd.DataFrame.from_records(rows, columns=list(MODEL_INPUTS))
    return frame.astype(dict.fromkeys(NUMERIC, "float64"))


@dataclass(frozen=True)
class Prediction:
    """What the models said about one request's rows.

    Attributes:
        scores: Fraud probability per row, clipped to [0, 1].
        variants: Variant that answered each row (a failed canary row says ``champion``).
        model_ms: Time of the answering model's predict call for the row's variant
            (one call per variant and request), in milliseconds.
        canary_errors: ``(canary version, error)`` for rows routed to the canary that
            it failed to score (the champion answered them), else None.
    """

    scores: np.ndarray
    variants: list[Variant]
    model_ms: np.ndarray
    canary_errors: list[tuple[str, str] | None]


@dataclass
class Scorer:
    """Everything one scoring call needs; ``canary_weight`` may change at runtime."""

    features: GuardedFeatures
    models: ModelProvider
    predictions: PredictionLog
    metrics: Metrics
    threshold: float
    canary_weight: float

    def score(self, transactions: Sequence[Transaction]) -> list[Score]:
        """Score ``transactions`` (one request), log them and update the metrics.

        Raises:
            NotReadyError: No champion is loaded.
        """
        started = time.perf_counter()
        snapshot = self.models.models
        if snapshot.champion is None:
            raise NotReadyError("no champion model loaded")
        lookup = self.features.lookup([(t.user_id, t.merchant_id) for t in transactions])
        frame = model_frame(transactions, lookup.rows)
        weight, has_canary = self.canary_weight, snapshot.canary is not None
        variants = [choose_variant(t.user_id, weight, has_canary) for t in transactions]
        outcome = self._predict(snapshot, frame, variants)
        latency = time.perf_counter() - started
        results = [
            Score(
                transaction_id=txn.transaction_id,
                score=float(score),
                decision="decline" if score >= self.threshold else "approve",
                model_version=_version(snapshot, variant),
                variant=variant,
                features_fallback=lookup.fallback,
            )
            for txn, score, variant in zip(
                transactions, outcome.scores, outcome.variants, strict=True
            )
        ]
        self.predictions.append(_records(transactions, frame, results, latency, outcome))
        self._observe(results, latency, lookup.fallback)
        return results

    def _predict(
        self, snapshot: ModelSet, frame: pd.DataFrame, variants: list[Variant]
    ) -> Prediction:
        """Scores per row; rows whose canary fails are scored by the champion instead."""
        scores = np.empty(len(frame), dtype=np.float64)
        model_ms = np.zeros(len(frame), dtype=np.float64)
        canary_errors: list[tuple[str, str] | None] = [None] * len(frame)
        for variant in ("canary", "champion"):
            rows = [i for i, v in enumerate(variants) if v == variant]
            loaded = snapshot.get(variant)
            if not rows or loaded is None:
                continue
            started = time.perf_counter()
            try:
                scores[rows] = packaging.predict_frame(loaded.model, frame.iloc[rows])
            except Exception as error:
                self.metrics.errors.labels(variant, "predict").inc()
                if variant == "champion":
                    raise
                log.exception("canary version %s failed; champion answers", loaded.version)
                message = f"{type(error).__name__}: {error}"[:200]
                for i in rows:
                    canary_errors[i] = (loaded.version, message)
                failed = set(rows)
                variants = ["champion" if i in failed else v for i, v in enumerate(variants)]
                continue
            model_ms[rows] = (time.perf_counter() - started) * 1000.0
        return Prediction(np.clip(scores, 0.0, 1.0), variants, model_ms, canary_errors)

    def _observe(self, results: list[Score], latency: float, fallback: bool) -> None:
        for variant in {r.variant for r in results}:
            self.metrics.latency.labels(variant).observe(latency)
        for result in results:
            self.metrics.scores.labels(result.variant).observe(result.score)
        if fallback:
            self.metrics.fallbacks.inc(len(results))


def _version(snapshot: ModelSet, variant: Variant) -> str:
    loaded = snapshot.get(variant)
    assert loaded is not None  # a variant is only chosen when its model is loaded
    return loaded.version


def _records(
    transactions: Sequence[Transaction],
    frame: pd.DataFrame,
    results: list[Score],
    latency: float,
    outcome: Prediction,
) -> list[dict[str, Any]]:
    """Prediction-log records: keys, time, model inputs, verdict, latencies, canary error."""
    inputs = frame.to_dict(orient="records")
    return [
        {
            "transaction_id": txn.transaction_id,
            "ts": txn.ts.astimezone(UTC),
            "user_id": txn.user_id,
            "merchant_id": txn.merchant_id,
            **values,
            "score": result.score,
            "decision": result.decision,
            "variant": result.variant,
            "model_version": result.model_version,
            "latency_ms": round(latency * 1000.0, 3),
            "model_latency_ms": round(float(model_ms), 3),
            "canary_failed_version": canary_error and canary_error[0],
            "canary_error": canary_error and canary_error[1],
            "features_fallback": result.features_fallback,
        }
        for txn, values, result, model_ms, canary_error in zip(
            transactions, inputs, results, outcome.model_ms, outcome.canary_errors, strict=True
        )
    ]
