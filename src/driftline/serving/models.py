"""The champion and canary models, resolved by alias in the background.

Aliases are never resolved per request. A :class:`ModelProvider` polls the registry
every ``serve_poll_seconds`` (and once at start); a version that changed is loaded
fully first and then swapped in with one reference assignment of an immutable
:class:`ModelSet`, so a request that took a snapshot finishes on the model it started
with. A version that fails to load leaves the previous model in place; the failure is
logged and counted per alias.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from driftline.core.settings import Settings
from driftline.lifecycle import registry
from driftline.serving.schemas import Variant
from driftline.training import packaging

log = logging.getLogger(__name__)

ALIASES: tuple[Variant, ...] = ("champion", "canary")
#: ``alias -> version`` (``None`` when the alias is unset).
Resolver = Callable[[str], str | None]
#: ``version -> loaded pyfunc``.
Loader = Callable[[str], Any]


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, loaded (an MLflow pyfunc)."""

    version: str
    model: Any


@dataclass(frozen=True)
class ModelSet:
    """The models serving right now (``canary`` is optional)."""

    champion: LoadedModel | None = None
    canary: LoadedModel | None = None

    def get(self, variant: Variant) -> LoadedModel | None:
        """The model of ``variant``."""
        return self.champion if variant == "champion" else self.canary


class ModelProvider:
    """Holds the loaded champion and canary; refreshed by :meth:`refresh` or a poller."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolve: Resolver | None = None,
        load: Loader | None = None,
    ) -> None:
        """Use the MLflow registry of ``settings`` unless ``resolve``/``load`` are given."""
        self._poll_seconds = settings.serve_poll_seconds
        self._resolve = resolve or (lambda alias: _registry_version(settings, alias))
        self._load = load or (lambda version: packaging.load_version(settings, version))
        self._models = ModelSet()
        self._refresh_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.load_errors: dict[str, int] = dict.fromkeys(ALIASES, 0)

    @property
    def models(self) -> ModelSet:
        """A consistent snapshot of the serving models (take it once per request)."""
        return self._models

    def refresh(self) -> ModelSet:
        """Resolve both aliases and load what changed; return the (new) snapshot."""
        with self._refresh_lock:
            current = self._models
            updated = {alias: self._refreshed(alias, current.get(alias)) for alias in ALIASES}
            fresh = ModelSet(**updated)
            self._models = fresh  # the swap: one reference assignment
            return fresh

    def _refreshed(self, alias: Variant, loaded: LoadedModel | None) -> LoadedModel | None:
        """The model ``alias`` should serve now (``loaded`` on any failure)."""
        try:
            version = self._resolve(alias)
            if version is None:
                if loaded is not None:
                    log.info("alias %s unset; no longer serving version %s", alias, loaded.version)
                return None
            if loaded is not None and loaded.version == version:
                return loaded
            model = LoadedModel(version, self._load(version))
        except Exception:  # a bad version or registry outage must not take serving down
            self.load_errors[alias] += 1
            log.exception("could not refresh %s; keeping %s", alias, loaded and loaded.version)
            return loaded
        log.info("now serving %s version %s", alias, version)
        return model

    def start(self) -> None:
        """Start the background poller (its first refresh runs at once)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the poller and wait for a refresh in progress to end."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self._poll_seconds)


def _registry_version(settings: Settings, alias: str) -> str | None:
    """The version holding ``alias`` in the MLflow registry."""
    found = registry.version_by_alias(settings, alias)
    return None if found is None else str(found.version)
