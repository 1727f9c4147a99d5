"""Prometheus metrics of one app, on its own ``CollectorRegistry`` (never the global one).

Request-path metrics are updated as requests run; model versions, load errors, the
breaker state, the feature lookups' counts and admission control's occupancy are read
from their owners at scrape time by :class:`_StateCollector`, so a gauge is never stale
(an idle service whose breaker's reset period has passed reports half-open).

The fallback rate is ``driftline_feature_fallback_total / driftline_scored_rows_total``
(both count rows); ``deploy/monitoring/alerts.yaml`` alerts on it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from driftline.serving.admission import Admission, RateLimiter
from driftline.serving.lookup import (
    BREAKER_STATE_VALUE,
    READ_BUCKETS,
    CircuitBreaker,
    GuardedFeatures,
)
from driftline.serving.models import ALIASES, ModelProvider

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))


class _StateCollector(Collector):
    """Model versions, load errors, breaker state, lookup counts and admission state."""

    def __init__(
        self,
        models: ModelProvider,
        breaker: CircuitBreaker,
        features: GuardedFeatures | None,
        admission: Admission | None,
        limiter: RateLimiter | None,
    ) -> None:
        self._models = models
        self._breaker = breaker
        self._features = features
        self._admission = admission
        self._limiter = limiter

    def collect(self) -> Iterator[Metric]:
        versions = GaugeMetricFamily(
            "driftline_model_version",
            "Registered version served per alias (value: the version number).",
            labels=["alias", "version"],
        )
        snapshot = self._models.models
        for alias in ALIASES:
            loaded = snapshot.get(alias)
            if loaded is not None:
                number = float(loaded.version) if loaded.version.isdigit() else 1.0
                versions.add_metric([alias, loaded.version], number)
        yield versions
        yield counts_by(
            "driftline_model_load_errors",
            "Failed loads of an alias's version (the previous model kept serving).",
            "alias",
            self._models.load_errors,
        )
        yield GaugeMetricFamily(
            "driftline_feature_breaker_state",
            "Feature-store circuit breaker: 0 closed, 1 open, 2 half-open.",
            value=BREAKER_STATE_VALUE[self._breaker.state],
        )
        if self._features is not None:
            yield from _lookup_metrics(self._features)
        if self._admission is not None:
            yield from _admission_metrics(self._admission)
        if self._limiter is not None:
            yield counts_by(
                "driftline_rate_limited",
                "Scoring requests refused with 429 by the per-key rate limit, by key id "
                "(first 8 hex digits of the key's sha256).",
                "key",
                self._limiter.limited,
            )


def _lookup_metrics(features: GuardedFeatures) -> Iterator[Metric]:
    """Counts of the feature lookups: store calls, failures, fallbacks by reason."""
    stats = features.stats
    yield CounterMetricFamily(
        "driftline_feature_lookups",
        "Feature lookups (one per scoring request).",
        value=stats.lookups,
    )
    yield GaugeMetricFamily(
        "driftline_feature_lookups_queued",
        "Feature lookups waiting for a free feature worker now.",
        value=features.queued,
    )
    yield CounterMetricFamily(
        "driftline_feature_store_reads",
        "Online-store calls (concurrent lookups are coalesced into one call).",
        value=stats.store_reads,
    )
    cumulative, buckets = 0, []
    for bound, count in zip((*READ_BUCKETS, float("inf")), stats.read_buckets, strict=True):
        cumulative += count
        buckets.append((str(bound) if bound != float("inf") else "+Inf", float(cumulative)))
    yield HistogramMetricFamily(
        "driftline_feature_store_read_seconds",
        "Duration of finished online-store calls (a call still hanging is not in it).",
        buckets=buckets,
        sum_value=stats.read_seconds,
    )
    yield CounterMetricFamily(
        "driftline_feature_store_read_entities",
        "Distinct entity pairs asked of the online store.",
        value=stats.store_entities,
    )
    yield counts_by(
        "driftline_feature_store_failures",
        "Failed online-store calls by reason (timeout: past the call limit from "
        "the call's start; error: the store raised).",
        "reason",
        stats.store_failures,
    )
    yield counts_by(
        "driftline_feature_store_call_extensions",
        "Further periods given to online-store calls past their limit, by rule (stall: "
        "the process was paused; saturated: its CPU was busy; starved: it waited to run).",
        "rule",
        stats.extensions,
    )
    yield counts_by(
        "driftline_feature_lookup_fallbacks",
        "Lookups answered from the fallback, by reason (store_failed, breaker_open, no_worker).",
        "reason",
        stats.fallbacks,
    )


def _admission_metrics(admission: Admission) -> Iterator[Metric]:
    """Admission control: occupancy now, its limits, admitted and shed requests."""
    yield GaugeMetricFamily(
        "driftline_in_flight_requests",
        "Scoring requests being served now.",
        value=admission.in_flight,
    )
    yield GaugeMetricFamily(
        "driftline_queued_requests",
        "Scoring requests waiting for an admission slot now.",
        value=admission.queued,
    )
    yield GaugeMetricFamily(
        "driftline_max_in_flight_requests",
        "Admission limit on scoring requests served at once (serve_max_in_flight).",
        value=admission.max_in_flight,
    )
    yield CounterMetricFamily(
        "driftline_admitted_requests",
        "Scoring requests admitted by admission control.",
        value=admission.stats.admitted,
    )
    yield counts_by(
        "driftline_shed_requests",
        "Scoring requests shed with 503 (overload), by reason (queue_full, queue_timeout).",
        "reason",
        admission.stats.shed,
    )


class Metrics:
    """The app's metrics and the registry ``/metrics`` exposes."""

    def __init__(
        self,
        models: ModelProvider,
        breaker: CircuitBreaker,
        *,
        features: GuardedFeatures | None = None,
        admission: Admission | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        """Create every metric on a fresh registry (the owners passed are read at scrape)."""
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "driftline_request_latency_seconds",
            "Scoring request latency by variant.",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.errors = Counter(
            "driftline_errors",
            "Scoring errors by variant and kind.",
            ["variant", "kind"],
            registry=self.registry,
        )
        self.scores = Histogram(
            "driftline_score",
            "Fraud scores by variant.",
            ["variant"],
            buckets=SCORE_BUCKETS,
            registry=self.registry,
        )
        self.requests = Counter(
            "driftline_http_requests",
            "HTTP requests by route template and status code (unhandled errors count as 500; "
            "paths matching no route as route 'unmatched').",
            ["route", "status"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "driftline_feature_fallback",
            "Predictions made with fallback features (store failed, slow or breaker open).",
            registry=self.registry,
        )
        self.rows = Counter(
            "driftline_scored_rows",
            "Rows scored and answered (the denominator of the fallback rate).",
            registry=self.registry,
        )
        self.registry.register(_StateCollector(models, breaker, features, admission, limiter))
        for alias in ALIASES:  # expose the series before the first request
            self.latency.labels(alias)
            self.scores.labels(alias)


def counts_by(
    name: str, documentation: str, label: str, counts: Mapping[str, float]
) -> CounterMetricFamily:
    """A counter family with one label: one sample per entry of ``counts``, in key order."""
    family = CounterMetricFamily(name, documentation, labels=[label])
    for value, count in sorted(counts.items()):
        family.add_metric([value], count)
    return family
