"""Shared fixtures: an isolated driftline state folder per test, small simulated data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from driftline.core.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[1]
ANCHOR = date(2026, 1, 1)


@pytest.fixture(autouse=True, scope="session")
def _data_starts_at_anchor() -> Iterator[None]:
    """Every test simulates from :data:`ANCHOR`: declare it the first day of data.

    Look-back days before it are then legitimately absent for the feature job (which
    otherwise requires every one); subprocesses (Airflow, the demo loop) inherit it.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DRIFTLINE_DATA_START", ANCHOR.isoformat())
        yield


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose every store lives under ``tmp_path`` (also as the process default)."""
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


#: Environment variables ``mlflow.set_tracking_uri`` / ``set_registry_uri`` export.
MLFLOW_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


@pytest.fixture(autouse=True)
def _isolated_mlflow_uris() -> Iterator[None]:
    """Undo MLflow's process-global URIs after each test.

    ``mlflow.set_tracking_uri``/``set_registry_uri`` (needed by the fluent logging API)
    also export environment variables, and the global registry URI becomes the default
    of every later ``MlflowClient(tracking_uri)``: left behind, they point later tests
    and their subprocesses at an earlier test's registry.
    """
    import os

    import mlflow

    saved = {name: os.environ.get(name) for name in MLFLOW_ENV}
    yield
    mlflow.set_tracking_uri(None)  # type: ignore[arg-type]
    mlflow.set_registry_uri(None)  # type: ignore[arg-type]
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
