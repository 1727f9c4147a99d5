"""Reading the scoring service's Prometheus exposition and the PromQL that uses it.

Shared by the tests of the alert rules and of the Grafana dashboard under
``deploy/monitoring`` (``tests/integration/test_serving_load.py``): both check that every
metric their expressions name is one the app exports on ``/metrics``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: A metric name in a PromQL expression (all of ours start with driftline_).
METRIC_NAME = re.compile(r"\bdriftline_[a-z0-9_]+\b")

#: The series a metric family of each type is queried by (``name`` + suffix).
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}


def samples(metrics: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition as {(name, sorted labels): value}."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(metrics)
        for sample in family.samples
    }


def sample(metrics: str, name: str, **labels: str) -> float:
    """One sample's value (KeyError when it is not exported)."""
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


def sample_names(metrics: str) -> set[str]:
    """Names of every sample exported."""
    return {name for name, _ in samples(metrics)}


def series_names(metrics: str) -> set[str]:
    """Names PromQL can query: every sample's, and every declared family's series.

    A labelled metric declares itself (``# TYPE``) before its first child exists, e.g.
    ``driftline_errors_total`` before the first error: it is exported all the same.
    """
    declared = {
        family.name + suffix
        for family in text_string_to_metric_families(metrics)
        for suffix in SERIES_SUFFIXES.get(family.type, ("",))
    }
    return declared | sample_names(metrics)


def referenced_metrics(expr: str) -> set[str]:
    """The driftline metrics a PromQL expression names."""
    return set(METRIC_NAME.findall(expr))


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, those folded into rows included."""
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def dashboard_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query target of a Grafana dashboard."""
    return [
        (panel["title"], target["expr"])
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
        if "expr" in target
    ]
