"""``retrain_promote`` rolls a bad canary back while the champion keeps serving.

The DAG runs for real (``dag.test`` in a subprocess on an embedded Airflow) against a
real MLflow registry on SQLite; the scoring app runs in this process (FastAPI
TestClient) with the real model provider polling the aliases, and replays a simulated
day once it serves the canary, as live traffic would arrive. Version 1 is a real torch
model; version 2 is a deliberately failing MLflow pyfunc whose registration says it
passed every offline gate (it only fails on live traffic). Online features come from an
in-memory stand-in: the Feast online store is exercised in the feature-store and
closed-loop tests; what matters here is the rollout.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import Any

import mlflow
import pytest
from fastapi.testclient import TestClient
from mlflow.pyfunc import PythonModel

from driftline.core.settings import Settings
from driftline.lifecycle import registry
from driftline.serving import ModelProvider, create_app, read_predictions
from driftline.serving.lookup import FeatureRow, missing_row
from driftline.serving.replay import ReplayResult, replay_day
from driftline.simulator import SimulatorConfig
from driftline.training import packaging
from driftline.training.model import ModelConfig
from driftline.training.trainer import train_model
from tests.dags.conftest import REPO, Runner, airflow_env
from tests.frames import model_frame

pytestmark = pytest.mark.slow

DAY = date(2026, 1, 10)
KEY = "driftline-dev-key"
ROLLOUT_ENV = {
    "DRIFTLINE_CANARY_MIN_REQUESTS": "200",
    "DRIFTLINE_CANARY_POKE_SECONDS": "1",
    "DRIFTLINE_SERVE_CANARY_WEIGHT": "0.5",
}


class Failing(PythonModel):
    """A model that loads but cannot score (e.g. built against another feature schema)."""

    def predict(self, context: Any, model_input: Any, params: Any = None) -> Any:
        raise RuntimeError("model expects 31 inputs, got 22")


class NoFeatures:
    """Stand-in online store: every entity unknown (the model's preprocessor copes)."""

    def fetch(self, entities: Sequence[tuple[int, int]]) -> list[FeatureRow]:
        return [missing_row() for _ in entities]


@pytest.fixture
def registered(airflow_home: tuple[Path, Runner]) -> Settings:
    """Champion 1 (real model) and candidate 2 (failing, offline gates 'passed')."""
    home, _ = airflow_home
    cfg = Settings(home=home / "state", serve_poll_seconds=0.3, serve_canary_weight=0.5)
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    mlflow.set_registry_uri(cfg.mlflow_tracking_uri)
    frame = model_frame(n=2000, seed=0)
    model = train_model(ModelConfig(max_epochs=2), frame[:1500], frame[1500:], seed=0, device="cpu")
    model.save(home / "model")
    with mlflow.start_run(experiment_id=registry.experiment_id(cfg)):
        uri = packaging.log_pyfunc(home / "model", frame)
    mlflow.register_model(uri, cfg.model_name)
    with mlflow.start_run(experiment_id=registry.experiment_id(cfg)):
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Failing(), pip_requirements=["mlflow"]
        )
    mlflow.register_model(info.model_uri, cfg.model_name)
    registry.set_alias(cfg, registry.CHAMPION, "1")
    registry.set_alias(cfg, registry.STAGING, "2")
    registry.tag_version(
        cfg,
        "2",
        {
            "gate.staging": "passed",
            "candidate.pr_auc": "0.610000",
            "champion.version": "1",
            "champion.pr_auc": "0.550000",
        },
    )
    return cfg


class Traffic(threading.Thread):
    """Replays :data:`DAY` through the app once it serves a canary."""

    def __init__(self, client: TestClient, provider: ModelProvider) -> None:
        super().__init__(daemon=True)
        self.client, self.provider = client, provider
        self.result: ReplayResult | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            if self.provider.models.canary is not None:
                self.result = replay_day(
                    DAY,
                    base_url="http://testserver",
                    api_key=KEY,
                    rate=0,
                    config=SimulatorConfig(rows_per_day=1200, fraud_rate=0.02),
                    batch_size=50,
                    client=self.client,
                )
                return


@pytest.fixture
def service(registered: Settings) -> Iterator[tuple[TestClient, ModelProvider]]:
    """The scoring app on the shared registry and home, with its alias poller running."""
    provider = ModelProvider(registered)
    app = create_app(registered, features=NoFeatures(), models=provider)
    with TestClient(app) as client:
        deadline = time.monotonic() + 60
        while provider.models.champion is None and time.monotonic() < deadline:
            time.sleep(0.2)
        yield client, provider


def _run_dag(
    home: Path, conf: dict[str, str], *, check: bool = True, **env: str
) -> subprocess.CompletedProcess[str]:
    """One manual ``retrain_promote`` run with ``conf`` and the rollout settings."""
    script = str(REPO / "scripts" / "run_dag.py")
    done = subprocess.run(
        [sys.executable, script, "retrain_promote", "--conf", json.dumps(conf)],
        env={**airflow_env(home), **ROLLOUT_ENV, **env},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check:
        assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    return done


def _aliases(cfg: Settings) -> dict[str, str]:
    model = registry.client(cfg).get_registered_model(cfg.model_name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def _tags(cfg: Settings, version: str) -> dict[str, str]:
    return dict(registry.client(cfg).get_model_version(cfg.model_name, version).tags)


def test_failing_canary_is_rolled_back_and_no_request_fails(
    airflow_home: tuple[Path, Runner],
    registered: Settings,
    service: tuple[TestClient, ModelProvider],
) -> None:
    home, _ = airflow_home
    client, provider = service
    traffic = Traffic(client, provider)
    traffic.start()
    try:
        done = _run_dag(home, {"candidate_version": "2", "window_end": DAY.isoformat()})
    finally:
        traffic.stop.set()
        traffic.join()

    assert "retrain_promote manual run: success" in done.stdout
    assert _aliases(registered) == {"champion": "1", "staging": "2"}  # canary removed
    tags = _tags(registered, "2")
    assert tags["decision.retrain_gate"].startswith("passed: candidate PR-AUC 0.610 beats")
    assert tags["decision.rollback"].startswith("canary failed: FAILED error rate 1.0000")
    assert float(tags["decision.rollback.error_rate"]) == 1.0
    assert float(tags["decision.rollback.routed"]) >= 200
    assert tags["decision.rollback.at"] == "2026-01-10T00:00:00+00:00"
    assert tags["decision.rollback.actor"].startswith("airflow:retrain_promote:")
    assert "canary analysis: rollback" in done.stdout + done.stderr
    # Every request was answered, by the champion: the canary's failures fell back.
    result = traffic.result
    assert result is not None and result.failed == {}
    assert result.ok == result.sent and result.model_versions == {"1": result.sent}
    logged = read_predictions(registered, DAY)
    failed_rows = logged["canary_failed_version"].eq("2")
    assert failed_rows.sum() >= 200 and logged["canary_error"][failed_rows].str.contains("31").all()
    assert set(logged["model_version"]) == {"1"}
    assert provider.refresh().canary is None and provider.models.champion.version == "1"  # type: ignore[union-attr]


def test_no_canary_traffic_in_time_is_a_rollback(
    airflow_home: tuple[Path, Runner], registered: Settings
) -> None:
    home, _ = airflow_home

    _run_dag(
        home,
        {"candidate_version": "2", "window_end": DAY.isoformat()},
        DRIFTLINE_CANARY_WAIT_SECONDS="4",
    )

    assert _aliases(registered) == {"champion": "1", "staging": "2"}
    assert _tags(registered, "2")["decision.rollback"].startswith("no canary verdict within 4 s")


def test_a_candidate_that_does_not_beat_the_champion_fails_the_gate(
    airflow_home: tuple[Path, Runner], registered: Settings
) -> None:
    home, _ = airflow_home
    registry.tag_version(registered, "2", {"candidate.pr_auc": "0.540000"})

    done = _run_dag(home, {"candidate_version": "2", "window_end": DAY.isoformat()}, check=False)

    assert done.returncode != 0 and "retrain_promote manual run: failed" in done.stdout
    assert _aliases(registered) == {"champion": "1", "staging": "2"}
    assert _tags(registered, "2")["decision.retrain_gate"].startswith(
        "failed: candidate PR-AUC 0.540 does not beat champion 1's 0.550"
    )
