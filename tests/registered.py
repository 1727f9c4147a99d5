"""Small real models registered in a SQLite MLflow registry, for the serving tests.

Each version is trained on a synthetic frame (its own seed) and registered through
``packaging.log_pyfunc``, so it carries the lean form exactly as the register step
writes it. :class:`Switchable` wraps a loaded model so a test can make that version
fail (raise, or return NaN) on demand: the only stand-in in these tests, for a model
that breaks on live traffic, which a healthy artifact cannot be made to do.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from driftline.core.columns import STORE_NUMERIC
from driftline.core.settings import Settings
from driftline.lifecycle import promotion, registry
from driftline.serving.lookup import FeatureRow, missing_row
from driftline.serving.models import load_scorable
from driftline.training import packaging
from driftline.training.lean import Columns
from driftline.training.model import ModelConfig
from driftline.training.trainer import train_model
from tests.frames import model_frame

KEY = {"X-API-Key": "driftline-dev-key"}


def register_models(root: Path, seeds: Sequence[int] = (0, 1)) -> Settings:
    """A registry under ``root`` holding one version per seed (versions 1, 2, ...)."""
    cfg = Settings(home=root / "state")
    mlflow.set_tracking_uri(cfg.mlflow_tracking_uri)
    mlflow.set_registry_uri(cfg.mlflow_tracking_uri)
    for seed in seeds:
        frame = model_frame(n=2000, seed=seed)
        model = train_model(
            ModelConfig(max_epochs=2), frame[:1500], frame[1500:], seed=seed, device="cpu"
        )
        model.save(root / f"model-{seed}")
        with mlflow.start_run(experiment_id=registry.experiment_id(cfg)):
            uri = packaging.log_pyfunc(root / f"model-{seed}", frame)
        mlflow.register_model(uri, cfg.model_name)
    return cfg


def on_registry(settings: Settings, registered: Settings, **overrides: Any) -> Settings:
    """``settings`` (this test's home) pointed at the shared ``registered`` registry.

    The alias poll is hourly unless ``overrides`` say otherwise: tests refresh by hand.
    """
    update: dict[str, Any] = {
        "mlflow_tracking_uri": registered.mlflow_tracking_uri,
        "mlflow_artifact_uri": registered.mlflow_artifact_uri,
        "serve_poll_seconds": 3600.0,
        # In-process tests read the prediction log while the app still serves: each
        # request's rows are written before it answers (the buffering has its own tests).
        "prediction_log_flush_rows": 1,
        # A 1 ms event-store call is sometimes descheduled past the shipped 50 ms limit
        # while `make test` runs Spark and Airflow lanes on two cores, and a timeout makes
        # fallback rows; tests of the limit itself set it (or build their own guard).
        "serve_event_timeout_ms": 1000.0,
        **overrides,
    }
    return settings.model_copy(update=update)


def clear_aliases(cfg: Settings) -> None:
    """Remove every alias, the recorded previous champion and the canary control."""
    client = registry.client(cfg)
    for alias in registry.ALIASES:
        if registry.version_by_alias(cfg, alias) is not None:
            client.delete_registered_model_alias(cfg.model_name, alias)
    tags = client.get_registered_model(cfg.model_name).tags or {}
    if registry.PREVIOUS_CHAMPION_TAG in tags:
        client.delete_registered_model_tag(cfg.model_name, registry.PREVIOUS_CHAMPION_TAG)
    promotion.clear_canary_control(cfg)


def champion_then_promote(cfg: Settings, first: str, second: str) -> None:
    """``first`` becomes champion, then ``second`` is promoted over it (recorded previous)."""
    clear_aliases(cfg)
    registry.set_alias(cfg, registry.CHAMPION, first)
    promotion.start_canary(cfg, second, weight=0.0, reason="test", actor="test")
    promotion.promote(cfg, reason="test", actor="test")


class Switchable:
    """A real loaded model that a test can make fail: ``mode`` ok, raise or nan."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.mode = "ok"
        self.calls = 0

    def predict_columns(self, columns: Columns) -> np.ndarray:
        self.calls += 1
        if self.mode == "raise":
            raise RuntimeError("corrupt weights")
        scores = np.asarray(self.inner.predict_columns(columns), dtype=np.float64)
        if self.mode == "nan":
            return np.full_like(scores, math.nan)
        return scores


class Loader:
    """Loads versions with the service's real loader, once each, wrapped switchable."""

    def __init__(self, cfg: Settings) -> None:
        self.cfg = cfg
        self.models: dict[str, Switchable] = {}
        self.loads: list[str] = []
        self._lock = threading.Lock()  # the poller's loader thread loads too

    def __call__(self, version: str) -> Switchable:
        with self._lock:
            self.loads.append(version)
            if version not in self.models:
                self.models[version] = Switchable(load_scorable(self.cfg, version))
            return self.models[version]


class Features:
    """In-memory feature source: every user gets the same known features."""

    def __init__(self) -> None:
        self.row = {**missing_row(), **{name: 1.0 + i for i, name in enumerate(STORE_NUMERIC)}}

    def fetch(self, entities: Sequence[tuple[int, int]]) -> list[FeatureRow]:
        return [dict(self.row) for _ in entities]


def txn(i: int, user: int = 1, **override: Any) -> dict[str, Any]:
    """A valid transaction payload on 2026-01-10."""
    return {
        "transaction_id": f"tx-{i}",
        "ts": "2026-01-10T03:30:00+00:00",
        "user_id": user,
        "card_id": 1,
        "merchant_id": 1,
        "merchant_category": "electronics",
        "merchant_country": "DE",
        "amount": 420.5 + i,
        "currency": "EUR",
        "channel": "online",
        "device_id": "device-1",
    } | override


def wait_for(condition: Callable[[], bool], seconds: float = 60.0) -> bool:
    """Poll ``condition`` every 10 ms for up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.01)
    return condition()
