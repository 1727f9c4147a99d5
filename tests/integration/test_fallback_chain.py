"""The lean predict path and the fallback chain, on real registered models.

Versions 1 and 2 are trained and registered once per module (SQLite MLflow, the
register step's ``log_pyfunc``, which exports and checks the lean form). The service
loads them with its real loader; :class:`tests.registered.Switchable` makes a loaded
version fail on demand, standing for a model that breaks on live traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from driftline.core.columns import MODEL_INPUTS
from driftline.core.feature_spec import FRESH_FEATURES
from driftline.core.settings import Settings
from driftline.lifecycle import registry
from driftline.serving import ModelProvider, create_app, read_predictions, rules
from driftline.serving.api import Service
from driftline.serving.models import PyfuncModel, load_scorable
from driftline.serving.schemas import Transaction
from driftline.serving.scoring import model_columns
from driftline.training import lean, packaging
from tests.frames import model_frame
from tests.registered import (
    KEY,
    Features,
    Loader,
    champion_then_promote,
    on_registry,
    register_models,
    txn,
)

DAY = date(2026, 1, 10)


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Versions 1 and 2 in a fresh registry."""
    return register_models(tmp_path_factory.mktemp("registry"), seeds=(0, 1))


@pytest.fixture
def served(
    settings: Settings, registered: Settings
) -> Iterator[tuple[TestClient, Service, Loader, Settings]]:
    """The app on the shared registry (polling by hand), this test's home."""
    cfg = on_registry(settings, registered)
    loader = Loader(cfg)
    app = create_app(cfg, features=Features(), models=ModelProvider(cfg, load=loader))
    with TestClient(app) as client:
        yield client, app.state.service, loader, cfg


def test_registered_lean_form_scores_like_the_registered_pyfunc(registered: Settings) -> None:
    rows = model_frame(n=400, seed=11)[list(MODEL_INPUTS)]
    for version in ("1", "2"):
        lean_model = lean.load_version(registered, version)
        assert isinstance(lean_model, lean.LeanModel)
        pyfunc = packaging.load_version(registered, version)

        expected = packaging.predict_frame(pyfunc, rows)
        got = lean_model.predict_columns(lean.frame_columns(rows))

        assert np.max(np.abs(got - expected)) <= lean.TOLERANCE
        assert isinstance(load_scorable(registered, version), lean.LeanModel)


def test_a_version_registered_without_the_lean_form_is_served_by_its_pyfunc(
    registered: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Registered as before the lean form existed: the pyfunc alone.
    from driftline.training.trainer import TrainedModel

    frame = model_frame(n=300, seed=2)
    source = Path(registered.home).parent / "model-0"
    with mlflow.start_run(experiment_id=registry.experiment_id(registered)):
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=packaging._fraud_model_class()(),
            artifacts={packaging.ARTIFACT_KEY: str(source)},
        )
    version = str(mlflow.register_model(info.model_uri, registered.model_name).version)

    with caplog.at_level(logging.WARNING, logger="driftline.serving.models"):
        model = load_scorable(registered, version)

    assert lean.load_version(registered, version) is None
    assert isinstance(model, PyfuncModel)
    assert f"version {version} has no lean form" in caplog.text
    expected = TrainedModel.load(source).predict_proba(frame)
    got = model.predict_columns(lean.frame_columns(frame))
    assert np.max(np.abs(got - expected)) <= lean.TOLERANCE


def fresh(logged: pd.DataFrame, transaction_id: str) -> dict[str, float]:
    """The fresh features ``transaction_id`` was scored with (its logged line)."""
    return {name: float(logged.loc[transaction_id, name]) for name in FRESH_FEATURES}


def test_fallback_chain_previous_champion_then_rules_said_in_response_and_log(
    served: tuple[TestClient, Service, Loader, Settings], settings: Settings
) -> None:
    client, service, loader, cfg = served
    champion_then_promote(cfg, "1", "2")
    snapshot = service.models.refresh()
    assert snapshot.champion and snapshot.champion.version == "2"
    assert snapshot.previous_champion and snapshot.previous_champion.version == "1"

    def score(i: int) -> dict[str, object]:
        reply = client.post("/v1/score", json=txn(i), headers=KEY)
        assert reply.status_code == 200, reply.text
        body: dict[str, object] = reply.json()
        return body

    healthy = score(0)
    loader.models["2"].mode = "raise"
    by_previous = score(1)
    loader.models["2"].mode = "nan"  # a non-finite score is a failure too
    by_previous_nan = score(2)
    loader.models["1"].mode = "raise"
    by_rules = score(3)

    assert (healthy["answered_by"], healthy["model_version"]) == ("champion", "2")
    assert (by_previous["answered_by"], by_previous["model_version"]) == ("previous_champion", "1")
    assert by_previous_nan["answered_by"] == "previous_champion"
    assert (by_rules["answered_by"], by_rules["model_version"]) == ("rules", rules.VERSION)
    assert {r["variant"] for r in (healthy, by_previous, by_rules)} == {"champion"}
    logged = read_predictions(settings, DAY).set_index("transaction_id")
    # Each answer is exactly what that link computes for the transaction (with the fresh
    # features it was scored with, as logged).
    columns = model_columns([Transaction(**txn(1))], [Features().row], [fresh(logged, "tx-1")])
    assert by_previous["score"] == pytest.approx(
        float(loader.models["1"].inner.predict_columns(columns)[0]), abs=1e-12
    )
    rule_columns = model_columns([Transaction(**txn(3))], [Features().row], [fresh(logged, "tx-3")])
    assert by_rules["score"] == pytest.approx(float(rules.score(rule_columns)[0]), abs=1e-12)

    assert logged["answered_by"].tolist() == [
        "champion",
        "previous_champion",
        "previous_champion",
        "rules",
    ]
    assert logged.loc["tx-1", "champion_failed_version"] == "2"
    assert "corrupt weights" in logged.loc["tx-1", "champion_error"]
    assert "ModelOutputError" in logged.loc["tx-2", "champion_error"]
    assert logged.loc["tx-3", "previous_failed_version"] == "1"
    assert logged.loc["tx-3", "model_version"] == rules.VERSION
    assert logged.loc["tx-0", "champion_error"] is None
    metrics = client.get("/metrics").text
    assert 'driftline_errors_total{kind="predict",variant="champion"} 3.0' in metrics
    assert 'driftline_errors_total{kind="predict",variant="previous_champion"} 1.0' in metrics
    assert 'driftline_answers_total{answered_by="rules"} 1.0' in metrics
    assert 'driftline_answers_total{answered_by="previous_champion"} 2.0' in metrics
    assert 'driftline_loaded_model{slot="previous_champion",version="1"} 1.0' in metrics


def test_without_a_previous_champion_the_rules_answer(
    served: tuple[TestClient, Service, Loader, Settings],
) -> None:
    client, service, loader, cfg = served
    from tests.registered import clear_aliases

    clear_aliases(cfg)
    registry.set_alias(cfg, registry.CHAMPION, "1")
    assert service.models.refresh().previous_champion is None
    loader.models["1"].mode = "raise"
    batch = [txn(i, user=i) for i in range(1, 6)]
    reply = client.post("/v1/score/batch", json={"transactions": batch}, headers=KEY)
    assert reply.status_code == 200, reply.text
    assert {s["answered_by"] for s in reply.json()["scores"]} == {"rules"}


def test_concurrent_single_requests_score_as_one_by_one(
    served: tuple[TestClient, Service, Loader, Settings],
) -> None:
    import threading

    client, service, _, cfg = served
    registry.set_alias(cfg, registry.CHAMPION, "1")
    service.models.refresh()
    payloads = [txn(i, user=i + 1, amount=20.0 + 37.0 * i) for i in range(24)]
    # Recorded once first, so both passes below are retries that see the same earlier
    # transactions (the fresh features of a first sighting depend on what came before).
    assert client.post("/v1/score/batch", json={"transactions": payloads}, headers=KEY).is_success
    one_by_one = {
        p["transaction_id"]: client.post("/v1/score", json=p, headers=KEY).json()["score"]
        for p in payloads
    }
    concurrent: dict[str, float] = {}
    go = threading.Event()

    def fire(chunk: list[dict[str, object]]) -> None:
        go.wait()
        for p in chunk:
            body = client.post("/v1/score", json=p, headers=KEY).json()
            concurrent[str(p["transaction_id"])] = body["score"]

    threads = [threading.Thread(target=fire, args=(payloads[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    go.set()
    for thread in threads:
        thread.join(timeout=60)

    assert concurrent.keys() == one_by_one.keys()
    for key, value in one_by_one.items():
        assert concurrent[key] == pytest.approx(value, abs=1e-6)


def test_rules_never_lower_the_score_for_a_larger_amount() -> None:
    base = model_columns(
        [
            Transaction(**txn(0, amount=a, ts=datetime(2026, 1, 10, 12, tzinfo=UTC).isoformat()))
            for a in (5.0, 50.0, 350.0, 1500.0, 40_000.0)
        ],
        [Features().row] * 5,
    )
    scores = rules.score(base)
    assert np.all(np.diff(scores) >= 0) and 0.0 < scores[0] < scores[-1] < 1.0
