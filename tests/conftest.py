"""Shared fixtures: an isolated driftline state folder per test, small simulated data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest

from driftline.settings import Settings, get_settings

REPO = Path(__file__).resolve().parents[1]
ANCHOR = date(2026, 1, 1)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings whose every store lives under ``tmp_path`` (also as the process default)."""
    monkeypatch.setenv("DRIFTLINE_HOME", str(tmp_path / "state"))
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()
