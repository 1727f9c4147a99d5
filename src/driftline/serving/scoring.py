"""Score transactions: model inputs, canary split, fallback chain, shadow, log and metrics.

The model inputs of each transaction are its request-time fields, the store features
of its user and merchant (``driftline.core.columns``) and its fresh features
(``FRESH_FEATURES``: the event state's history just before it, see
:mod:`driftline.serving.fresh`; one event-store call per request, asked while the Feast
lookup runs), built as plain column arrays straight from the validated transactions
and the lookup rows (no pandas per request); the loaded model (its lean form, see
:mod:`driftline.training.lean`) applies the preprocessing saved with it. Concurrent
requests on one variant share a forward pass (:mod:`driftline.serving.batching`). Each
request takes one snapshot of the serving models, so a swap during the request never
mixes versions within it.

Who answers a row (the response's and the log's ``answered_by``):

1. the routed variant (``champion``, or ``canary`` for its share of users); rows the
   canary fails on go to the champion (logged with ``canary_failed_version`` and
   ``canary_error``);
2. when the champion fails, the ``previous_champion`` (kept loaded by the provider);
3. when that fails too or there is none, the documented rule-based score
   (:mod:`driftline.serving.rules`, ``model_version`` ``rules-1``).

A failure is an exception or a non-finite score; each is counted in
``driftline_errors_total{variant, kind="predict"}`` and logged on the row
(``champion_failed_version``/``champion_error``, ``previous_failed_version``/
``previous_error``). After the answer, a copy of the request goes to the ``shadow``
version, if one is loaded (:mod:`driftline.serving.shadow`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from driftline.core.columns import MODEL_INPUTS, NUMERIC, REQUEST_CATEGORICAL, STORE_NUMERIC
from driftline.core.feature_spec import FRESH_FEATURES
from driftline.data.predictions import PredictionLog, ts_micros
from driftline.serving import rules
from driftline.serving.batching import MicroBatcher
from driftline.serving.fresh import (
    FreshLookup,
    FreshRow,
    GuardedEvents,
    PendingFresh,
    missing_fresh,
)
from driftline.serving.lookup import FeatureRow, GuardedFeatures
from driftline.serving.metrics import Metrics, counts_by
from driftline.serving.models import ModelProvider, ModelSet
from driftline.serving.routing import choose_variant
from driftline.serving.schemas import AnsweredBy, Score, Transaction, Variant
from driftline.serving.shadow import ShadowJob, ShadowScorer

log = logging.getLogger(__name__)

#: Who may answer, in the order the chain tries them after the routed variant.
ANSWERERS: tuple[AnsweredBy, ...] = ("champion", "canary", "previous_champion", "rules")


class NotReadyError(RuntimeError):
    """No champion model is loaded yet."""


class ModelOutputError(RuntimeError):
    """A model returned scores that are not finite (or the wrong number of them)."""


def model_columns(
    transactions: Sequence[Transaction],
    features: Sequence[FeatureRow],
    fresh: Sequence[FreshRow] | None = None,
) -> dict[str, Any]:
    """The model inputs of each transaction as columns (numbers float64, NaN missing).

    ``MODEL_INPUTS`` plus every ``FRESH_FEATURES`` column (from ``fresh``, one row per
    transaction; all NaN without it), whether or not the model reads them.
    Numeric inputs are float64 arrays; categorical inputs are lists of strings.
    """
    n = len(transactions)
    columns: dict[str, Any] = {
        "amount": np.fromiter((t.amount for t in transactions), dtype=np.float64, count=n),
        "hour_of_day": np.fromiter(
            (t.ts.astimezone(UTC).hour for t in transactions), dtype=np.float64, count=n
        ),
    }
    for name in STORE_NUMERIC:
        columns[name] = np.fromiter((row[name] for row in features), dtype=np.float64, count=n)
    for name in FRESH_FEATURES:
        columns[name] = (
            np.full(n, np.nan)
            if fresh is None
            else np.fromiter((row[name] for row in fresh), dtype=np.float64, count=n)
        )
    for name in REQUEST_CATEGORICAL:
        columns[name] = [getattr(t, name) for t in transactions]
    return columns


#: The model frame's columns: the model inputs, then the fresh features they lack.
FRAME_COLUMNS: tuple[str, ...] = MODEL_INPUTS + tuple(
    name for name in FRESH_FEATURES if name not in MODEL_INPUTS
)


def model_frame(
    transactions: Sequence[Transaction],
    features: Sequence[FeatureRow],
    fresh: Sequence[FreshRow] | None = None,
) -> pd.DataFrame:
    """The model inputs (and fresh features) as a pandas model frame (what a pyfunc takes).

    Not used per request; for comparisons with ``mlflow models serve`` and the pyfunc.
    """
    frame = pd.DataFrame(model_columns(transactions, features, fresh), columns=list(FRAME_COLUMNS))
    return frame.astype(dict.fromkeys((*NUMERIC, *FRESH_FEATURES), "float64"))


def _take(columns: dict[str, Any], rows: list[int], total: int) -> dict[str, Any]:
    """The ``rows`` of ``columns`` (the columns themselves when that is all of them)."""
    if len(rows) == total:
        return columns
    index = np.asarray(rows, dtype=np.int64)
    return {
        name: values[index] if isinstance(values, np.ndarray) else [values[i] for i in rows]
        for name, values in columns.items()
    }


def _checked(scores: np.ndarray, rows: int) -> np.ndarray:
    """``scores`` if there is one finite score per row, else :class:`ModelOutputError`."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if scores.shape[0] != rows or not np.all(np.isfinite(scores)):
        raise ModelOutputError(f"model returned {scores.shape[0]} scores for {rows} rows or NaN")
    return scores


def _message(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:200]


@dataclass
class Prediction:
    """What answered each row of one request, and how.

    Attributes:
        scores: Fraud probability per row, clipped to [0, 1].
        variants: Variant each row was served as (a failed canary row says ``champion``).
        answered_by: Who produced each score (see the module docstring).
        versions: Version that answered each row (``rules-1`` for the rules).
        model_ms: Time of the answering call for the row's group, in milliseconds.
        canary_errors: ``(canary version, error)`` for rows the canary failed on.
        champion_errors: ``(champion version, error)`` for rows the champion failed on.
        previous_errors: ``(previous version, error)`` where the previous champion failed.
    """

    scores: np.ndarray
    variants: list[Variant]
    answered_by: list[AnsweredBy]
    versions: list[str]
    model_ms: np.ndarray
    canary_errors: list[tuple[str, str] | None]
    champion_errors: list[tuple[str, str] | None]
    previous_errors: list[tuple[str, str] | None]

    @classmethod
    def empty(cls, variants: list[Variant]) -> Prediction:
        """Nothing answered yet for rows routed as ``variants``."""
        n = len(variants)
        return cls(
            scores=np.zeros(n, dtype=np.float64),
            variants=list(variants),
            answered_by=["champion"] * n,
            versions=[""] * n,
            model_ms=np.zeros(n, dtype=np.float64),
            canary_errors=[None] * n,
            champion_errors=[None] * n,
            previous_errors=[None] * n,
        )

    def answer(
        self, rows: list[int], scores: np.ndarray, who: AnsweredBy, version: str, ms: float
    ) -> None:
        """Record that ``who`` (``version``) answered ``rows`` with ``scores``."""
        self.scores[rows] = scores
        self.model_ms[rows] = ms
        for i in rows:
            self.answered_by[i] = who
            self.versions[i] = version


@dataclass
class Scorer:
    """Everything one scoring call needs.

    Attributes:
        canary_weight: Share of users routed to the canary when the registry records no
            canary control (``serve_canary_weight``); see :meth:`serving_weight`.
        batch_window_ms: Longest wait to merge concurrent requests (0: never merge).
        batch_max_rows: Most rows in one merged forward pass.
        shadow: Scores copies for the ``shadow`` alias (built on first use if None).
        shadow_queue: Queue size of the default shadow scorer.
        events: The event store behind its guard; None scores with NaN fresh features
            (flagged as a fallback).
    """

    features: GuardedFeatures
    models: ModelProvider
    predictions: PredictionLog
    metrics: Metrics
    threshold: float
    canary_weight: float
    batch_window_ms: float = 2.0
    batch_max_rows: int = 512
    shadow: ShadowScorer | None = None
    shadow_queue: int = 1024
    events: GuardedEvents | None = None
    answered: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ANSWERERS, 0))

    def __post_init__(self) -> None:
        """One batcher per variant; counters exposed on the app's metrics registry."""
        self._answered_lock = threading.Lock()
        self._failures = FailureLog()
        self.batchers = {
            variant: MicroBatcher(
                variant, window_seconds=self.batch_window_ms / 1000.0, max_rows=self.batch_max_rows
            )
            for variant in ("champion", "canary")
        }
        if self.shadow is None:
            self.shadow = ShadowScorer(
                self.predictions.shadow_log(),
                queue_size=self.shadow_queue,
                threshold=self.threshold,
            )
        self.metrics.registry.register(_ScoringCollector(self))

    def serving_weight(self) -> float:
        """The canary's share now: the registry's control (0 when paused or aborted),
        else :attr:`canary_weight`."""
        control = self.models.canary_control
        return self.canary_weight if control is None else control.serving_weight

    def score(self, transactions: Sequence[Transaction]) -> list[Score]:
        """Score ``transactions`` (one request), log them and update the metrics.

        Raises:
            NotReadyError: No champion is loaded.
        """
        started = time.perf_counter()
        snapshot = self.models.models
        if snapshot.champion is None:
            raise NotReadyError("no champion model loaded")
        weight, has_canary = self.serving_weight(), snapshot.canary is not None
        variants = [choose_variant(t.user_id, weight, has_canary) for t in transactions]
        routed = sorted(set(variants))
        for variant in routed:
            self.batchers[variant].announce()
        try:
            pending = self.events.begin(transactions) if self.events is not None else None
            lookup = self.features.lookup([(t.user_id, t.merchant_id) for t in transactions])
            fresh = self._fresh(pending, len(transactions))
            columns = model_columns(transactions, lookup.rows, fresh.rows)
        except BaseException:
            for variant in routed:
                self.batchers[variant].withdraw()
            raise
        outcome = self._predict(snapshot, columns, variants, routed)
        fallback = lookup.fallback or fresh.fallback
        latency = time.perf_counter() - started
        results = [
            Score(
                transaction_id=txn.transaction_id,
                score=float(score),
                decision="decline" if score >= self.threshold else "approve",
                model_version=version,
                variant=variant,
                answered_by=who,
                features_fallback=fallback,
            )
            for txn, score, variant, who, version in zip(
                transactions,
                outcome.scores,
                outcome.variants,
                outcome.answered_by,
                outcome.versions,
                strict=True,
            )
        ]
        self.predictions.append_columns(
            _log_columns(transactions, columns, fresh, results, latency, outcome, fallback),
            len(transactions),
        )
        self._observe(results, latency, fallback)
        self._offer_shadow(snapshot, transactions, columns, results)
        return results

    def _fresh(self, pending: PendingFresh | None, rows: int) -> FreshLookup:
        """The fresh features of a request begun as ``pending`` (NaN without a store)."""
        if self.events is None or pending is None:
            return FreshLookup([missing_fresh() for _ in range(rows)], "no_event_store")
        return self.events.finish(pending)

    def _predict(
        self,
        snapshot: ModelSet,
        columns: dict[str, Any],
        variants: list[Variant],
        routed: list[Variant],
    ) -> Prediction:
        """Scores per row: canary rows it fails go to the champion, then down the chain."""
        n = len(variants)
        outcome = Prediction.empty(variants)
        order: tuple[Variant, ...] = ("canary", "champion")  # failed canary rows go on
        for variant in order:
            rows = [i for i, v in enumerate(outcome.variants) if v == variant]
            loaded = snapshot.get(variant)
            if not rows or loaded is None:
                if variant in routed:
                    self.batchers[variant].withdraw()
                continue
            part = _take(columns, rows, n)
            call = time.perf_counter()
            try:
                if variant in routed:
                    scores = self.batchers[variant].predict(loaded.model, part, len(rows))
                else:  # failed canary rows: the champion was not announced for them
                    scores = loaded.model.predict_columns(part)
                scores = _checked(scores, len(rows))
            except Exception as error:
                self.metrics.errors.labels(variant, "predict").inc()
                message = (loaded.version, _message(error))
                if variant == "canary":
                    self._failures.report(variant, loaded.version, "champion answers")
                    for i in rows:
                        outcome.canary_errors[i] = message
                        outcome.variants[i] = "champion"
                    continue
                self._failures.report(variant, loaded.version, "fallback chain answers")
                for i in rows:
                    outcome.champion_errors[i] = message
                self._fall_back(snapshot, part, rows, outcome)
                continue
            outcome.answer(rows, scores, variant, loaded.version, _ms(call))
        outcome.scores = np.clip(outcome.scores, 0.0, 1.0)
        return outcome

    def _fall_back(
        self, snapshot: ModelSet, part: dict[str, Any], rows: list[int], outcome: Prediction
    ) -> None:
        """The champion failed on ``rows``: the previous champion answers, else the rules."""
        previous = snapshot.previous_champion
        if previous is not None:
            call = time.perf_counter()
            try:
                scores = _checked(previous.model.predict_columns(part), len(rows))
            except Exception as error:
                self.metrics.errors.labels("previous_champion", "predict").inc()
                self._failures.report("previous_champion", previous.version, "rules answer")
                for i in rows:
                    outcome.previous_errors[i] = (previous.version, _message(error))
            else:
                outcome.answer(rows, scores, "previous_champion", previous.version, _ms(call))
                return
        call = time.perf_counter()
        outcome.answer(rows, rules.score(part), "rules", rules.VERSION, _ms(call))

    def _observe(self, results: list[Score], latency: float, fallback: bool) -> None:
        """Request latency per variant, each row's score, who answered, fallback rows."""
        scores: dict[Variant, list[float]] = {}
        answered: dict[AnsweredBy, int] = {}
        for result in results:
            scores.setdefault(result.variant, []).append(result.score)
            answered[result.answered_by] = answered.get(result.answered_by, 0) + 1
        for variant, values in scores.items():
            self.metrics.latency.labels(variant).observe(latency)
            histogram = self.metrics.scores.labels(variant)  # one child lookup per variant
            for value in values:
                histogram.observe(value)
        with self._answered_lock:  # request threads count concurrently
            for who, count in answered.items():
                self.answered[who] += count
        if fallback:
            self.metrics.fallbacks.inc(len(results))

    def _offer_shadow(
        self,
        snapshot: ModelSet,
        transactions: Sequence[Transaction],
        columns: dict[str, Any],
        results: list[Score],
    ) -> None:
        """Queue a copy for the shadow version (never blocks, never raises)."""
        shadow = snapshot.shadow
        if shadow is None or self.shadow is None:
            return
        try:
            self.shadow.offer(
                ShadowJob(shadow.version, shadow.model, list(transactions), columns, results)
            )
        except Exception:  # the answer is already made; the shadow must not change it
            log.exception("could not queue the shadow copy")

    def close(self) -> None:
        """Stop the batchers' and the shadow's threads (queued shadow copies are logged)."""
        for batcher in self.batchers.values():
            batcher.close()
        if self.shadow is not None:
            self.shadow.close()


class FailureLog:
    """Logs model failures without flooding: a traceback the first time per model, then
    one line per ``every_seconds`` with the count since (a broken champion fails on every
    request; the metrics count each one)."""

    def __init__(self, every_seconds: float = 10.0) -> None:
        """Repeat a model's failure line at most every ``every_seconds``."""
        self._every = every_seconds
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def report(self, slot: str, version: str, then: str) -> None:
        """Record a failure of ``slot`` ``version`` (call inside the ``except`` block)."""
        now = time.monotonic()
        with self._lock:
            last, count = self._seen.get((slot, version), (-math.inf, 0))
            due = now - last >= self._every
            self._seen[(slot, version)] = (now, 0) if due else (last, count + 1)
        if last == -math.inf:
            log.exception("%s version %s failed; %s", slot, version, then)
        elif due:
            log.error(
                "%s version %s failed again (%d more since the last line); %s",
                slot,
                version,
                count + 1,
                then,
            )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0


class _ScoringCollector(Collector):
    """Answers by who answered, merged forward passes and shadow counts, at scrape time."""

    def __init__(self, scorer: Scorer) -> None:
        self._scorer = scorer

    def collect(self) -> Iterator[Metric]:
        loaded = GaugeMetricFamily(
            "driftline_loaded_model",
            "Versions held by the service per slot (champion, canary, shadow and the "
            "previous champion kept for the fallback chain and rollback); value 1.",
            labels=["slot", "version"],
        )
        for slot, version in self._scorer.models.models.versions().items():
            loaded.add_metric([slot, version], 1.0)
        yield loaded
        yield GaugeMetricFamily(
            "driftline_canary_weight",
            "Share of users routed to the canary now (the registry's canary control, 0 "
            "when paused or aborted, else serve_canary_weight).",
            value=self._scorer.serving_weight(),
        )
        yield counts_by(
            "driftline_answers",
            "Rows answered, by who answered (champion, canary, previous_champion after a "
            "champion failure, rules when no model could answer).",
            "answered_by",
            self._scorer.answered,
        )
        passes = CounterMetricFamily(
            "driftline_forward_passes",
            "Model forward passes by variant (one per merged batch or lone request).",
            labels=["variant"],
        )
        merged = CounterMetricFamily(
            "driftline_merged_requests",
            "Requests whose rows shared a forward pass with other requests, by variant.",
            labels=["variant"],
        )
        for variant, batcher in self._scorer.batchers.items():
            passes.add_metric([variant], batcher.passes)
            merged.add_metric([variant], batcher.merged_requests)
        yield passes
        yield merged
        shadow = self._scorer.shadow
        if shadow is not None:
            yield CounterMetricFamily(
                "driftline_shadow_scored", "Rows scored by the shadow model.", value=shadow.scored
            )
            yield CounterMetricFamily(
                "driftline_shadow_dropped",
                "Requests not shadow-scored because the shadow queue was full.",
                value=shadow.dropped,
            )
            yield CounterMetricFamily(
                "driftline_shadow_errors",
                "Shadow forward passes that failed (the answers were unaffected).",
                value=shadow.errors,
            )


#: The chain's error fields of the prediction log (``None`` where nothing failed).
_ERROR_SLOTS = ("canary", "champion", "previous")


def _error_columns(outcome: Prediction, rows: int) -> dict[str, list[str | None]]:
    """Which version of each slot failed on each row, and how (None where none did)."""
    columns: dict[str, list[str | None]] = {}
    failures = (outcome.canary_errors, outcome.champion_errors, outcome.previous_errors)
    for slot, errors in zip(_ERROR_SLOTS, failures, strict=True):
        if any(errors):
            columns[f"{slot}_failed_version"] = [e and e[0] for e in errors]
            columns[f"{slot}_error"] = [e and e[1] for e in errors]
        else:  # most requests: nothing failed
            columns[f"{slot}_failed_version"] = columns[f"{slot}_error"] = [None] * rows
    return columns


def _log_columns(
    transactions: Sequence[Transaction],
    columns: dict[str, Any],
    fresh: FreshLookup,
    results: list[Score],
    latency: float,
    outcome: Prediction,
    fallback: bool,
) -> dict[str, Any]:
    """Prediction-log columns of a request: keys, time, the model inputs and fresh
    features as scored (``columns``, from :func:`model_columns`), verdict, who answered,
    errors, and whether the features fell back."""
    n = len(transactions)
    log_columns: dict[str, Any] = {
        "transaction_id": [t.transaction_id for t in transactions],
        "ts": ts_micros(t.ts for t in transactions),
        "user_id": np.fromiter((t.user_id for t in transactions), dtype=np.int64, count=n),
        "merchant_id": np.fromiter((t.merchant_id for t in transactions), dtype=np.int64, count=n),
        **{name: columns[name] for name in ("amount", "hour_of_day", *STORE_NUMERIC)},
        **{name: columns[name] for name in FRESH_FEATURES},
        **{name: columns[name] for name in REQUEST_CATEGORICAL},
        "score": outcome.scores,
        "decision": [result.decision for result in results],
        "variant": list(outcome.variants),
        "answered_by": list(outcome.answered_by),
        "model_version": list(outcome.versions),
        "latency_ms": np.full(n, round(latency * 1000.0, 3)),
        "model_latency_ms": np.round(outcome.model_ms, 3),
        **_error_columns(outcome, n),
        "features_fallback": np.full(n, fallback),
        "fresh_fallback": [fresh.reason] * n,
    }
    return log_columns
