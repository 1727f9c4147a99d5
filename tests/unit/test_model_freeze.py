"""A loaded model is frozen out of the garbage collector's sight (``gc.freeze``).

The scoring app freezes its heap once at start-up; models load later (the poller's
background loader, or :meth:`ModelProvider.refresh`), so each load freezes again: a full
collection then never walks a loaded model's objects.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from driftline.core.settings import Settings
from driftline.serving.models import ModelProvider
from driftline.training.lean import Columns


class _Model:
    """A scorable holding many collector-tracked objects, as a loaded model does."""

    def __init__(self) -> None:
        self.parts = [{"weight": float(i)} for i in range(20_000)]

    def predict_columns(self, columns: Columns) -> np.ndarray:
        """A constant score per row."""
        return np.zeros(len(next(iter(columns.values()))))


@pytest.fixture(autouse=True)
def _unfrozen() -> Iterator[None]:
    """Give the rest of the test session a collector that sees everything again."""
    yield
    gc.unfreeze()


def _tracked(obj: object) -> bool:
    """Whether ``obj`` is in a generation the collector walks (frozen ones are not)."""
    return any(o is obj for o in gc.get_objects())


def _provider(tmp_path: Path) -> ModelProvider:
    settings = Settings(home=tmp_path, serve_poll_seconds=0.05)
    return ModelProvider(
        settings,
        resolve=lambda alias: "1" if alias == "champion" else None,
        load=lambda _version: _Model(),
    )


def test_a_model_loaded_by_refresh_is_frozen(tmp_path: Path) -> None:
    gc.unfreeze()
    provider = _provider(tmp_path)
    champion = provider.refresh().champion
    assert champion is not None
    assert isinstance(champion.model, _Model)
    assert not _tracked(champion.model.parts)
    assert not _tracked(champion.model.parts[-1])


def test_a_model_loaded_in_the_background_is_frozen(tmp_path: Path) -> None:
    gc.unfreeze()
    provider = _provider(tmp_path)
    provider.start()
    try:
        deadline = time.monotonic() + 30.0
        while provider.models.champion is None and time.monotonic() < deadline:
            time.sleep(0.02)
        champion = provider.models.champion
    finally:
        provider.stop()
    assert champion is not None
    assert isinstance(champion.model, _Model)
    assert not _tracked(champion.model.parts)
