"""Secrets in settings: masked by ``driftline info``; the development key only runs locally."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from driftline.cli import app
from driftline.core.settings import DEV_API_KEY, Settings, get_settings, mask_secrets
from driftline.serving import create_app
from driftline.serving.app import InsecureSettingsError, check_api_keys


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("postgresql://mlflow:hunter2@db:5432/mlflow", "postgresql://mlflow:***@db:5432/mlflow"),
        ("postgresql+psycopg2://u:p%40ss@db/x", "postgresql+psycopg2://u:***@db/x"),
        ("redis://:hunter2@cache:6379/0", "redis://:***@cache:6379/0"),
        ("cache:6379,password=hunter2,ssl=true", "cache:6379,password=***,ssl=true"),
        ("sqlite:////tmp/state/mlflow.db", "sqlite:////tmp/state/mlflow.db"),
        ("s3://bucket/lake", "s3://bucket/lake"),
        ("http://user@host:8080", "http://user@host:8080"),
        ("localhost:6379", "localhost:6379"),
    ],
)
def test_mask_secrets_hides_passwords_and_keeps_the_rest(value: str, shown: str) -> None:
    assert mask_secrets(value) == shown


def test_info_masks_api_keys_and_uri_passwords(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_SERVE_API_KEYS", "k-live-1,k-live-2")
    monkeypatch.setenv("DRIFTLINE_MLFLOW_TRACKING_URI", "postgresql://ml:hunter2@db/ml")
    monkeypatch.setenv("DRIFTLINE_OPTUNA_STORAGE", "postgresql://op:hunter3@db/op")
    monkeypatch.setenv("DRIFTLINE_REDIS_URL", "cache:6379,password=hunter4")
    get_settings.cache_clear()

    done = CliRunner().invoke(app, ["info"])

    assert done.exit_code == 0, done.output
    for secret in ("k-live", "hunter2", "hunter3", "hunter4"):
        assert secret not in done.output
    shown = json.loads(done.stdout)
    assert shown["serve_api_keys"] == "***"
    assert shown["mlflow_tracking_uri"] == "postgresql://ml:***@db/ml"
    assert shown["home"] == str(settings.home)  # the rest is shown as it is


def test_the_development_key_is_refused_outside_the_local_environment(
    settings: Settings,
) -> None:
    assert settings.environment == "local" and check_api_keys(settings) == (DEV_API_KEY,)
    production = settings.model_copy(update={"environment": "production"})
    with pytest.raises(InsecureSettingsError, match="development API key is refused"):
        create_app(production)
    mixed = production.model_copy(update={"serve_api_keys": f"k-live,{DEV_API_KEY}"})
    with pytest.raises(InsecureSettingsError):
        check_api_keys(mixed)
    with pytest.raises(InsecureSettingsError, match="empty"):
        check_api_keys(production.model_copy(update={"serve_api_keys": " , "}))
    assert check_api_keys(production.model_copy(update={"serve_api_keys": "k-live"})) == ("k-live",)
    # Without its own setting the environment is the Feast environment's.
    assert Settings(home=settings.home, feast_env="production").environment == "production"


def test_serve_refuses_to_start_with_the_development_key_in_production(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DRIFTLINE_ENVIRONMENT", "production")
    get_settings.cache_clear()

    done = CliRunner().invoke(app, ["serve", "--port", "1"])

    assert done.exit_code == 2
    assert "refusing to serve" in done.output and "DRIFTLINE_SERVE_API_KEYS" in done.output
