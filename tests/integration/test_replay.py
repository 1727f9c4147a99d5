"""Traffic replay through the real scoring app and a real registered model.

One small model is trained on a synthetic frame and registered twice (versions 1 and
2 share the artifact), so the app serves a champion and a canary from a real MLflow
SQLite registry. Online features come from an in-memory ``FeatureSource`` (every
feature missing, as for unknown users): Feast is exercised in ``test_feature_store.py``
and features do not change what the replay counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import mlflow
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from driftline.cli import app as cli
from driftline.core.settings import Settings
from driftline.lifecycle import registry
from driftline.orchestration.processes import free_port
from driftline.serving import ModelProvider, create_app, read_predictions
from driftline.serving.lookup import EntityKey, FeatureRow, missing_row
from driftline.serving.replay import replay_day
from driftline.simulator import SimulatorConfig
from driftline.training import packaging
from driftline.training.model import ModelConfig
from driftline.training.trainer import train_model
from tests.frames import model_frame

DAY = date(2026, 1, 10)
KEY = "driftline-dev-key"


class NoFeatures:
    """A :class:`FeatureSource` that knows no user (all features missing)."""

    def fetch(self, entities: Sequence[EntityKey]) -> list[FeatureRow]:
        return [missing_row() for _ in entities]


def register_model(cfg: Settings) -> None:
    """Train one small model and register it as versions 1 and 2."""
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    mlflow.set_registry_uri(cfg.mlflow_tracking_uri)
    frame = model_frame(n=1000, seed=0)
    model = train_model(ModelConfig(max_epochs=1), frame[:800], frame[800:], seed=0, device="cpu")
    model_dir = cfg.home / "model"
    model.save(model_dir)
    with mlflow.start_run(experiment_id=registry.experiment_id(cfg)):
        uri = packaging.log_pyfunc(model_dir, frame)
    for _ in range(2):
        mlflow.register_model(uri, cfg.model_name)
    registry.set_alias(cfg, registry.CHAMPION, "1")
    registry.set_alias(cfg, registry.CANARY, "2")


def test_replay_a_day_through_the_scoring_app(settings: Settings) -> None:
    register_model(settings)
    cfg = settings.model_copy(update={"serve_canary_weight": 0.5, "serve_poll_seconds": 3600.0})
    config = SimulatorConfig(seed=7, rows_per_day=400, anchor=date(2026, 1, 1))
    scoring = create_app(cfg, features=NoFeatures(), models=ModelProvider(cfg))

    with TestClient(scoring) as client:
        scoring.state.service.models.refresh()
        single = replay_day(
            DAY,
            base_url="http://testserver",
            api_key=KEY,
            rate=0,
            config=config,
            limit=200,
            client=client,
        )
        refused = replay_day(
            DAY,
            base_url="http://testserver",
            api_key="wrong",
            rate=0,
            config=config,
            batch_size=16,
            limit=20,
            client=client,
        )
        paced = replay_day(
            DAY,
            base_url="http://testserver",
            api_key="wrong",  # refused at once: only the pacing takes time
            rate=100.0,
            config=config,
            limit=11,
            client=client,
        )

    assert (single.sent, single.requests, single.ok, single.failed) == (200, 200, 200, {})
    assert sum(single.variants.values()) == 200
    assert single.variants["champion"] > 0 and single.variants["canary"] > 0
    assert single.model_versions == {
        "1": single.variants["champion"],
        "2": single.variants["canary"],
    }
    assert single.latency_p50_ms is not None and single.latency_p99_ms is not None
    assert 0 < single.latency_p50_ms <= single.latency_p99_ms
    assert (refused.requests, refused.ok, refused.failed) == (2, 0, {"403": 20})
    assert paced.seconds >= 0.1  # 11 requests at 100/s: 10 intervals of 10 ms

    logged = read_predictions(cfg, DAY)
    assert len(logged) == 200
    assert logged["transaction_id"].is_unique
    assert logged["ts"].is_monotonic_increasing  # sent in timestamp order
    assert logged["variant"].value_counts().to_dict() == single.variants


def test_replay_cli_reports_an_unreachable_service(settings: Settings) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # connection refused, never the network
    args = ["replay", "--day", "2026-01-10", "--url", url, "--rate", "0", "--limit", "3"]
    done = CliRunner().invoke(cli, [*args, "--rows-per-day", "200"])
    assert done.exit_code == 1, done.output
    assert '"transport_error": 3' in done.stdout
