"""Shadow scoring and instant rollback, on real registered models and the real poller.

Versions 1 and 2 are registered once per module. A shadow model that blocks, fails or
overflows its queue must never change an answer nor hold a request; a rollback (an
alias flip back to the kept previous champion) must be answered by it within a second,
without a model load; ``driftline rollback`` must not load a model or import torch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import date
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from driftline.cli import app as cli
from driftline.core.feature_spec import FRESH_FEATURES
from driftline.core.settings import Settings, get_settings
from driftline.lifecycle import promotion, registry
from driftline.monitoring.canary import analyse_shadow, read_shadow
from driftline.serving import ModelProvider, create_app, read_predictions
from driftline.serving.api import Service
from driftline.serving.models import load_scorable
from driftline.serving.schemas import Transaction
from driftline.serving.scoring import model_columns
from tests.registered import (
    KEY,
    Features,
    Loader,
    champion_then_promote,
    clear_aliases,
    on_registry,
    register_models,
    txn,
    wait_for,
)

DAY = date(2026, 1, 10)
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="module")
def registered(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Versions 1 and 2 in a fresh registry."""
    return register_models(tmp_path_factory.mktemp("registry"), seeds=(0, 1))


Start = Callable[..., tuple[TestClient, Service, Loader, Settings]]


@pytest.fixture
def serve(settings: Settings, registered: Settings) -> Iterator[Start]:
    """Start the app on the shared registry with this test's home (poller running)."""
    clients: list[TestClient] = []

    def start(
        preloaded: dict[str, Any] | None = None, **overrides: Any
    ) -> tuple[TestClient, Service, Loader, Settings]:
        """``preloaded``: what the loader returns for those versions (before the poller
        starts, which loads what the registry names at once)."""
        cfg = on_registry(settings, registered, **overrides)
        loader = Loader(cfg)
        loader.models.update(preloaded or {})
        app = create_app(cfg, features=Features(), models=ModelProvider(cfg, load=loader))
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client, app.state.service, loader, cfg

    yield start
    for client in clients:
        client.__exit__(None, None, None)


class Gate:
    """Wraps the shadow model: it waits for the test to open the gate, or fails."""

    def __init__(self, inner: Any, fail: bool = False) -> None:
        self.inner = inner
        self.fail = fail
        self.open = threading.Event()
        self.entered = threading.Event()

    def predict_columns(self, columns: Any) -> np.ndarray:
        self.entered.set()
        self.open.wait(30)
        if self.fail:
            raise RuntimeError("shadow exploded")
        return np.asarray(self.inner.predict_columns(columns))


def _answers(client: TestClient, ids: range) -> list[dict[str, Any]]:
    replies = [client.post("/v1/score", json=txn(i, user=i + 1), headers=KEY) for i in ids]
    assert all(r.status_code == 200 for r in replies), [r.text for r in replies]
    return [r.json() for r in replies]


def test_shadow_never_changes_or_holds_an_answer_and_is_logged_beside_it(
    serve: Start, settings: Settings, registered: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = Gate(load_scorable(registered, "2"))  # the shadow blocks until the test opens it
    client, service, _, cfg = serve(preloaded={"2": gate})
    clear_aliases(cfg)
    registry.set_alias(cfg, registry.CHAMPION, "1")
    service.models.refresh()
    baseline = _answers(client, range(6))

    promotion.start_shadow(cfg, "2", reason="try v2 on live traffic", actor="test")
    assert service.models.refresh().shadow is not None
    shadowed = _answers(client, range(6))  # all answered while the shadow is held

    assert not gate.open.is_set() and gate.entered.wait(10)
    assert shadowed == baseline  # same scores, versions, answered_by
    gate.open.set()
    assert service.scorer.shadow is not None
    service.scorer.shadow.drain()
    logged = read_shadow(settings, [DAY]).set_index("transaction_id")
    assert sorted(logged.index) == [f"tx-{i}" for i in range(6)]
    assert set(logged["shadow_version"].astype(str)) == {"2"}
    assert set(logged["model_version"].astype(str)) == {"1"}
    served = read_predictions(settings, DAY).drop_duplicates("transaction_id")
    scored_fresh = served.set_index("transaction_id").loc[[f"tx-{i}" for i in range(6)]]
    columns = model_columns(
        [Transaction(**txn(i, user=i + 1)) for i in range(6)],
        [Features().row] * 6,
        scored_fresh[list(FRESH_FEATURES)].to_dict("records"),
    )
    expected = gate.inner.predict_columns(columns)
    got = logged.loc[[f"tx-{i}" for i in range(6)], "shadow_score"].to_numpy(dtype=float)
    assert np.max(np.abs(got - expected)) <= 1e-6
    report = analyse_shadow(read_shadow(settings, [DAY]), shadow_version="2")
    assert (report.rows, report.compared, report.errors) == (6, 6, 0)
    assert report.mean_abs_diff == pytest.approx(
        float(np.mean(np.abs(got - [a["score"] for a in baseline]))), abs=1e-9
    )
    assert "driftline_shadow_scored_total 6.0" in client.get("/metrics").text

    # `driftline models` shows the comparison on the shadow version's row.
    monkeypatch.setenv("DRIFTLINE_MLFLOW_TRACKING_URI", registered.mlflow_tracking_uri)
    monkeypatch.setenv("DRIFTLINE_MLFLOW_ARTIFACT_URI", registered.mlflow_artifact_uri)
    get_settings.cache_clear()
    done = CliRunner().invoke(cli, ["models"])
    get_settings.cache_clear()
    assert done.exit_code == 0, done.output
    rows = {row["version"]: row for row in json.loads(done.stdout)}
    assert "shadow" in rows["2"]["aliases"] and "shadow" not in rows["1"]
    assert rows["2"]["shadow"]["rows"] == 6
    assert rows["2"]["shadow"]["mean_abs_diff"] == pytest.approx(report.mean_abs_diff)


def test_a_failing_or_overloaded_shadow_costs_no_answer(
    serve: Start, settings: Settings, registered: Settings
) -> None:
    gate = Gate(load_scorable(registered, "2"), fail=True)
    client, service, loader, cfg = serve(preloaded={"2": gate}, serve_shadow_queue=1)
    clear_aliases(cfg)
    registry.set_alias(cfg, registry.CHAMPION, "1")
    promotion.start_shadow(cfg, "2", reason="try", actor="test")
    service.models.refresh()

    answers = _answers(client, range(1))
    assert gate.entered.wait(10)  # the shadow worker now holds request 0's copy
    answers += _answers(client, range(1, 5))  # 1 waits in the queue, 2-4 are dropped

    assert {a["answered_by"] for a in answers} == {"champion"}
    assert {a["model_version"] for a in answers} == {"1"}
    assert loader.models["1"].calls == 5
    shadow = service.scorer.shadow
    assert shadow is not None and shadow.dropped == 3
    gate.open.set()
    shadow.drain()
    logged = read_shadow(settings, [DAY])
    assert len(logged) == 5 - shadow.dropped
    assert logged["shadow_score"].isna().all()
    assert logged["shadow_error"].str.contains("shadow exploded").all()
    metrics = client.get("/metrics").text
    assert f"driftline_shadow_dropped_total {float(shadow.dropped)}" in metrics
    assert "driftline_shadow_errors_total" in metrics


def test_rollback_is_answered_by_the_previous_version_within_a_second(serve: Start) -> None:
    client, service, loader, cfg = serve(serve_poll_seconds=0.2)
    champion_then_promote(cfg, "1", "2")
    service.models.notify()
    assert wait_for(
        lambda: (
            (m := service.models.models).champion is not None
            and m.champion.version == "2"
            and m.previous_champion is not None
            and m.previous_champion.version == "1"
        )
    )
    assert client.post("/v1/score", json=txn(0), headers=KEY).json()["model_version"] == "2"
    loads = list(loader.loads)

    started = time.monotonic()
    promotion.rollback(cfg, reason="bad canary metrics", actor="test")
    # The clock starts when the flip is in the registry (rollback returned): its own
    # registry writes take over a second on an SQLite registry while `make test` loads
    # two cores with three lanes; how long `driftline rollback` takes is measured apart.
    flipped = time.monotonic()
    answered_by_1 = None
    while time.monotonic() - flipped < 10.0:
        reply = client.post("/v1/score", json=txn(1), headers=KEY).json()
        if reply["model_version"] == "1":
            answered_by_1 = time.monotonic() - flipped
            break
        time.sleep(0.01)

    assert answered_by_1 is not None and answered_by_1 < 1.0, answered_by_1
    print(
        f"rollback answered by version 1 {answered_by_1:.3f} s after the flip "
        f"({flipped - started:.3f} s in promotion.rollback)"
    )
    assert loader.loads == loads  # the previous champion was already loaded: no load
    snapshot = service.models.models
    assert snapshot.previous_champion is not None and snapshot.previous_champion.version == "2"


def test_driftline_rollback_loads_no_model_and_imports_no_torch(
    registered: Settings, tmp_path: Any
) -> None:
    champion_then_promote(registered, "1", "2")
    script = (
        "import json, sys, time\n"
        "from typer.testing import CliRunner\n"
        "from driftline.cli import app\n"
        "started = time.perf_counter()\n"
        "result = CliRunner().invoke(app, ['rollback', '--reason', 'test rollback'])\n"
        "elapsed = time.perf_counter() - started\n"
        "heavy = sorted(m for m in ('torch', 'mlflow.pyfunc', 'driftline.training',\n"
        "    'driftline.serving', 'sklearn') if m in sys.modules)\n"
        "print(json.dumps({'exit': result.exit_code, 'heavy': heavy, 'seconds': elapsed,\n"
        "    'output': result.output[-400:]}))\n"
    )
    env = {
        **os.environ,
        "DRIFTLINE_HOME": str(registered.home),
        "DRIFTLINE_MLFLOW_TRACKING_URI": registered.mlflow_tracking_uri,
        "DRIFTLINE_MLFLOW_ARTIFACT_URI": registered.mlflow_artifact_uri,
    }
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    total = time.perf_counter() - started
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["exit"] == 0, found["output"]
    assert found["heavy"] == [], found
    champion = registry.version_by_alias(registered, registry.CHAMPION)
    assert champion is not None and str(champion.version) == "1"
    print(f"driftline rollback: {found['seconds']:.2f} s in-process, {total:.2f} s with start-up")


def test_driftline_shadow_sets_and_removes_the_alias(
    registered: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_MLFLOW_TRACKING_URI", registered.mlflow_tracking_uri)
    monkeypatch.setenv("DRIFTLINE_MLFLOW_ARTIFACT_URI", registered.mlflow_artifact_uri)
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        assert runner.invoke(cli, ["shadow"]).exit_code == 2  # neither --version nor --stop
        started = runner.invoke(cli, ["shadow", "--version", "2", "--reason", "try it"])
        assert started.exit_code == 0, started.output
        shadow = registry.version_by_alias(registered, registry.SHADOW)
        assert shadow is not None and str(shadow.version) == "2"
        assert (shadow.tags or {})["decision.shadow"] == "try it"
        assert runner.invoke(cli, ["shadow", "--stop"]).exit_code == 0
        assert registry.version_by_alias(registered, registry.SHADOW) is None
        assert runner.invoke(cli, ["shadow", "--stop"]).exit_code == 2  # nothing to stop
    finally:
        get_settings.cache_clear()
