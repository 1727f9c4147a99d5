"""Choosing where the training pipeline runs: KFP local runner or a Kubeflow cluster.

The cluster path is exercised against a stand-in for ``kfp.Client`` because a Kubeflow
Pipelines API server (Kubernetes + Argo) cannot run on this machine; the local path is
exercised for real in ``tests/dags/test_train_register.py``.
"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace
from typing import Any

import pytest

from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.orchestration import runner
from driftline.orchestration.runner import PipelineFailedError, TrainRequest


def test_arguments_split_the_trial_budget_over_the_workers() -> None:
    request = TrainRequest(Interval.parse("2026-01-02", "2026-01-17"), trials=7, workers=3)
    assert request.arguments() == {
        "window_start": "2026-01-02",
        "window_end": "2026-01-17",
        "request_id": "2026-01-02_2026-01-17",
        "worker_ids": [0, 1, 2],
        "trials_per_worker": 3,
        "airflow_run_id": "",
    }
    assert date.fromisoformat(request.arguments()["window_end"]) == date(2026, 1, 17)


class _FakeRun:
    def __init__(self, state: str) -> None:
        self.run_id = "run-123"
        self._state = state

    def wait_for_run_completion(self, timeout: int) -> Any:
        return SimpleNamespace(state=self._state)


class _FakeClient:
    """Records what would be submitted to the KFP API."""

    submitted: list[dict[str, Any]] = []
    state = "SUCCEEDED"

    def __init__(self, host: str) -> None:
        self.host = host

    def create_run_from_pipeline_func(self, pipeline: Any, **kwargs: Any) -> _FakeRun:
        self.submitted.append({"host": self.host, "pipeline": pipeline, **kwargs})
        return _FakeRun(self.state)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Settings:
    import kfp

    _FakeClient.submitted = []
    monkeypatch.setattr(kfp, "Client", _FakeClient)
    monkeypatch.setattr(
        runner, "outcome_from_registry", lambda cfg, request_id: {"request_id": request_id}
    )
    return settings.model_copy(update={"kfp_host": "http://kfp.example:8888"})


def test_a_configured_host_gets_the_same_pipeline_submitted(cluster: Settings) -> None:
    request = TrainRequest(Interval.parse("2026-01-02", "2026-01-17"), trials=4, workers=2)

    def pipeline(**kwargs: Any) -> None:  # never called locally when a host is set
        raise AssertionError("ran locally")

    outcome = runner.run_pipeline(pipeline, request, cluster)
    [submitted] = _FakeClient.submitted
    assert submitted["host"] == "http://kfp.example:8888"
    assert submitted["pipeline"] is pipeline
    assert submitted["arguments"] == request.arguments()
    assert submitted["enable_caching"] is False
    assert outcome == {"request_id": "2026-01-02_2026-01-17"}


def test_a_failed_cluster_run_is_an_error(cluster: Settings) -> None:
    _FakeClient.state = "FAILED"
    request = TrainRequest(Interval.parse("2026-01-02", "2026-01-17"), trials=4, workers=2)
    try:
        with pytest.raises(PipelineFailedError, match="run-123 ended FAILED"):
            runner.run_pipeline(lambda **_: None, request, cluster)
    finally:
        _FakeClient.state = "SUCCEEDED"
