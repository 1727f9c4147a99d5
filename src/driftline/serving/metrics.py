"""Prometheus metrics of one app, on its own ``CollectorRegistry`` (never the global one).

Request-path metrics are updated as requests run; model versions, load errors and the
breaker state are read from their owners at scrape time by :class:`_StateCollector`.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from driftline.serving.lookup import BREAKER_STATE_VALUE, CircuitBreaker
from driftline.serving.models import ALIASES, ModelProvider

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))


class _StateCollector(Collector):
    """Model versions per alias, model load errors and the breaker state."""

    def __init__(self, models: ModelProvider, breaker: CircuitBreaker) -> None:
        self._models = models
        self._breaker = breaker

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
        errors = CounterMetricFamily(
            "driftline_model_load_errors",
            "Failed loads of an alias's version (the previous model kept serving).",
            labels=["alias"],
        )
        for name, count in self._models.load_errors.items():
            errors.add_metric([name], count)
        yield errors
        yield GaugeMetricFamily(
            "driftline_feature_breaker_state",
            "Feature-store circuit breaker: 0 closed, 1 open, 2 half-open.",
            value=BREAKER_STATE_VALUE[self._breaker.state],
        )


class Metrics:
    """The app's metrics and the registry ``/metrics`` exposes."""

    def __init__(self, models: ModelProvider, breaker: CircuitBreaker) -> None:
        """Create every metric on a fresh registry."""
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
        self.registry.register(_StateCollector(models, breaker))
        for alias in ALIASES:  # expose the series before the first request
            self.latency.labels(alias)
            self.scores.labels(alias)
