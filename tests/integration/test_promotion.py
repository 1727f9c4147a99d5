"""Registry state transitions on a real MLflow SQLite registry.

The transitions only move aliases and write tags, so the registered versions need not
be fraud models: one tiny constant pyfunc is logged once and registered three times
(versions 1, 2, 3). It is a valid MLflow model, just never loaded here; the serving
tests cover real models.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import mlflow
import pytest
from mlflow.pyfunc import PythonModel
from typer.testing import CliRunner

from driftline.cli import app
from driftline.core.settings import Settings
from driftline.lifecycle import promotion, registry
from driftline.lifecycle.promotion import (
    PromotionError,
    abort_canary,
    promote,
    rollback,
    start_canary,
)

NOW = datetime(2026, 1, 12, 6, 0, tzinfo=UTC)


class Constant(PythonModel):
    """Scores every row 0.5."""

    def predict(self, context: Any, model_input: list[Any], params: Any = None) -> list[float]:
        return [0.5] * len(model_input)


@pytest.fixture
def versions(settings: Settings) -> Settings:
    """``settings`` with versions 1..3 registered; version 1 is the champion."""
    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)
    with mlflow.start_run(experiment_id=registry.experiment_id(settings)):
        # Explicit requirements: inferring them would load the model in a subprocess.
        info = mlflow.pyfunc.log_model(
            name="model", python_model=Constant(), pip_requirements=["mlflow"]
        )
    for _ in range(3):
        mlflow.register_model(info.model_uri, settings.model_name)
    registry.set_alias(settings, registry.CHAMPION, "1")
    return settings


def aliases(cfg: Settings) -> dict[str, str]:
    """Alias -> version of the registered model."""
    model = registry.client(cfg).get_registered_model(cfg.model_name)
    return {alias: str(version) for alias, version in model.aliases.items()}


def tags(cfg: Settings, version: str) -> dict[str, str]:
    """Tags of one version."""
    return dict(registry.client(cfg).get_model_version(cfg.model_name, version).tags)


def model_tags(cfg: Settings) -> dict[str, str]:
    """Tags of the registered model."""
    return dict(registry.client(cfg).get_registered_model(cfg.model_name).tags)


def test_canary_promote_rollback_round_trip(versions: Settings) -> None:
    cfg = versions
    registry.set_alias(cfg, registry.STAGING, "2")

    started = start_canary(cfg, "2", weight=0.2, reason="staging gate passed", actor="dag", now=NOW)
    assert (started.action, started.version, started.previous) == ("canary", "2", "1")
    assert aliases(cfg) == {"champion": "1", "canary": "2", "staging": "2"}
    v2 = tags(cfg, "2")
    assert v2["canary.weight"] == "0.2" and v2["canary.started"] == NOW.isoformat()
    assert v2["decision.canary"] == "staging gate passed" and v2["decision.actor"] == "dag"

    promoted = promote(cfg, reason="canary healthy", actor="dag", metrics={"error_rate": 0.001})
    assert (promoted.version, promoted.previous, promoted.timestamp) == ("2", "1", None)
    assert aliases(cfg) == {"champion": "2", "staging": "2"}
    v2 = tags(cfg, "2")
    assert v2["previous_champion"] == "1" and v2["decision.promote"] == "canary healthy"
    assert float(v2["decision.promote.error_rate"]) == 0.001
    assert "decision.promote.at" not in v2  # no `now`: no time recorded
    assert model_tags(cfg)["champion.previous"] == "1"
    assert tags(cfg, "1")["champion.replaced_by"] == "2"

    undone = rollback(cfg, reason="precision dropped", actor="oncall")
    assert (undone.action, undone.version, undone.previous) == ("rollback", "1", "2")
    assert aliases(cfg)["champion"] == "1"
    assert tags(cfg, "2")["decision.rolled_back_from"] == "precision dropped"
    assert tags(cfg, "2")["decision.rolled_back_from.to"] == "1"
    assert tags(cfg, "1")["decision.restored"] == "precision dropped"
    assert tags(cfg, "1")["decision.restored.from"] == "2"
    assert "champion.previous" not in model_tags(cfg)
    with pytest.raises(PromotionError, match="rollback from version 2; promote a new champion"):
        rollback(cfg, reason="again", actor="oncall")
    assert aliases(cfg)["champion"] == "1"

    # A new promotion records the restored champion, so rollback works again.
    start_canary(cfg, "3", weight=0.1, reason="retrained", actor="dag")
    assert promote(cfg, reason="ok", actor="dag").previous == "1"
    assert rollback(cfg, reason="bad", actor="oncall").version == "1"


def test_a_poll_that_sees_the_new_canary_also_sees_its_control(
    versions: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control is written before the alias moves (the prod profile's replicas once
    polled between the two and served the new canary at the settings' weight)."""
    cfg = versions
    start_canary(cfg, "2", weight=0.2, reason="first", actor="dag")
    seen: list[registry.ServingState] = []
    set_alias = promotion.set_alias

    def polled_then_set(settings: Settings, alias: str, version: str) -> None:
        seen.append(registry.serving_state(settings))  # a replica's poll just before
        set_alias(settings, alias, version)
        seen.append(registry.serving_state(settings))  # and just after

    monkeypatch.setattr(promotion, "set_alias", polled_then_set)
    start_canary(cfg, "3", weight=0.4, reason="second", actor="dag", now=NOW)
    before, after = seen
    assert before.aliases["canary"] == "2" and before.active_canary is None
    assert after.aliases["canary"] == "3" and after.active_canary is not None
    assert (after.active_canary.weight, after.active_canary.state) == (0.4, "running")
    assert after.active_canary.updated == NOW.isoformat()


def test_abort_canary_leaves_the_champion(versions: Settings) -> None:
    cfg = versions
    start_canary(cfg, "3", weight=0.5, reason="try it", actor="dag")
    aborted = abort_canary(cfg, reason="latency p99 doubled", actor="dag", metrics={"p99": 0.2})
    assert (aborted.action, aborted.version, aborted.previous) == ("abort", "3", "1")
    assert aliases(cfg) == {"champion": "1"}
    v3 = tags(cfg, "3")
    assert v3["decision.rollback"] == "latency p99 doubled" and v3["decision.rollback.p99"] == "0.2"
    assert "champion.previous" not in model_tags(cfg)
    assert aborted.to_dict()["metrics"] == {"p99": 0.2}


def test_refused_transitions(versions: Settings) -> None:
    cfg = versions
    with pytest.raises(PromotionError, match="no canary"):
        promote(cfg, reason="go", actor="dag")
    with pytest.raises(PromotionError, match="no canary"):
        abort_canary(cfg, reason="stop", actor="dag")
    with pytest.raises(PromotionError, match="replaced no recorded champion"):
        rollback(cfg, reason="back", actor="dag")
    with pytest.raises(PromotionError, match="already the champion"):
        start_canary(cfg, "1", weight=0.1, reason="x", actor="dag")
    with pytest.raises(ValueError, match="weight"):
        start_canary(cfg, "2", weight=1.5, reason="x", actor="dag")
    with pytest.raises(ValueError, match="reason"):
        start_canary(cfg, "2", weight=0.1, reason=" ", actor="dag")
    assert aliases(cfg) == {"champion": "1"}


def test_promote_again_completes_an_interrupted_promotion(versions: Settings) -> None:
    cfg = versions
    start_canary(cfg, "3", weight=0.1, reason="gate", actor="dag")
    # What an interruption after the champion alias moved leaves behind.
    registry.client(cfg).set_registered_model_tag(cfg.model_name, "champion.previous", "1")
    registry.set_alias(cfg, registry.CHAMPION, "3")

    finished = promote(cfg, reason="retry", actor="dag")
    assert (finished.version, finished.previous) == ("3", "1")
    assert aliases(cfg) == {"champion": "3"} and model_tags(cfg)["champion.previous"] == "1"
    assert rollback(cfg, reason="bad", actor="dag").version == "1"


def test_rollback_cli(versions: Settings) -> None:
    cfg = versions
    start_canary(cfg, "2", weight=0.1, reason="gate", actor="dag")
    promote(cfg, reason="healthy", actor="dag")
    runner = CliRunner()

    done = runner.invoke(app, ["rollback", "--reason", "alerts firing"])
    assert done.exit_code == 0, done.output
    assert '"version": "1"' in done.stdout and aliases(cfg)["champion"] == "1"
    assert tags(cfg, "1")["decision.restored.actor"] == "cli"
    again = runner.invoke(app, ["rollback", "--reason", "again"])
    assert again.exit_code == 2
    assert runner.invoke(app, ["rollback"]).exit_code != 0  # --reason is required
