"""The serving models by alias (champion, canary, shadow) and the previous champion.

Aliases are never resolved per request. A :class:`ModelProvider` polls the registry
every ``serve_poll_seconds`` with one cheap read (every alias and the recorded previous
champion, :func:`driftline.lifecycle.registry.serving_state`); loading is what is slow,
and it happens on a background loader thread, so the poll keeps running meanwhile. A
version is swapped in only once fully loaded, with one reference assignment of an
immutable :class:`ModelSet`, so a request that took a snapshot finishes on the model it
started with. Until then (and when a load fails: logged and counted per alias) the
alias keeps serving what it served.

The same read carries the canary control (registered-model tags ``canary.weight``,
``canary.state``, ``canary.version``, written by
:func:`driftline.lifecycle.promotion.set_canary_control`): every replica follows it at
its next poll, so all of them route the same share of users to the canary.
:attr:`ModelProvider.canary_control` is the control set for the current canary, or
``None`` when the registry records none (the scorer then uses ``serve_canary_weight``).

The champion that was replaced stays loaded as ``previous_champion`` (on start-up, the
registry's recorded ``champion.previous`` is loaded for it): it answers when the
champion fails on a request (the fallback chain, see :mod:`driftline.serving.scoring`),
and a rollback or any flip back to it is swapped in at the next poll, without a load.

Loading prefers the version's lean form (:mod:`driftline.training.lean`: TorchScript and
NumPy, no pandas per request); a version registered before the lean form existed is
served through its MLflow pyfunc, with a log line saying so.

After every load the collector's heap is frozen (``gc.freeze``, as the app does once at
start-up): a loaded model (TorchScript module, preprocessor arrays, the pyfunc's
imports) lives as long as it serves, so a full collection need not walk it again and
again; without this the first full collection after a load stopped every thread for
hundreds of milliseconds. The cost: cyclic garbage of a model replaced later is not
collected (reference counting still frees what is not in a cycle); models change a few
times a day at most.
"""

from __future__ import annotations

import gc
import itertools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np

from driftline.core.columns import MODEL_INPUTS
from driftline.core.settings import Settings
from driftline.lifecycle import registry
from driftline.lifecycle.registry import CANARY, CHAMPION, SHADOW, CanaryControl, ServingState
from driftline.serving.batching import Scorable
from driftline.serving.schemas import Variant
from driftline.training.lean import Columns

log = logging.getLogger(__name__)

#: Variants that answer requests (per-variant metrics are labelled with these).
ALIASES: tuple[Variant, ...] = ("champion", "canary")
#: Registry aliases the service follows.
FOLLOWED: tuple[str, ...] = (CHAMPION, CANARY, SHADOW)
#: Slot of the champion that was replaced (not an alias: the provider's own memory).
PREVIOUS = "previous_champion"
Slot = Literal["champion", "canary", "shadow", "previous_champion"]
#: ``alias -> version`` (``None`` when the alias is unset).
Resolver = Callable[[str], str | None]
#: ``version -> loaded model`` (a :class:`Scorable`, or a pyfunc to adapt).
Loader = Callable[[str], Any]
#: Seconds before the poller retries a version whose load failed.
RETRY_SECONDS = 5.0


class PyfuncModel:
    """A pyfunc behind :class:`Scorable` (versions registered before the lean form).

    Builds the pandas model frame the pyfunc expects: the slow path the lean form
    replaces, kept so older versions still serve.
    """

    def __init__(self, pyfunc: Any) -> None:
        """Wrap anything with ``predict(frame)``."""
        self.pyfunc = pyfunc

    def predict_columns(self, columns: Columns) -> np.ndarray:
        """Scores of the pyfunc on a frame built from ``columns``."""
        import pandas as pd

        frame = pd.DataFrame({name: columns[name] for name in MODEL_INPUTS})
        scores = self.pyfunc.predict(frame)
        return np.asarray(scores, dtype=np.float64).reshape(-1)


def as_scorable(model: Any) -> Scorable:
    """``model`` itself if it scores columns, else a pyfunc adapter around it."""
    if callable(getattr(model, "predict_columns", None)):
        return model  # type: ignore[no-any-return]
    return PyfuncModel(model)


def load_scorable(settings: Settings, version: str) -> Scorable:
    """One registered version: its lean form, else (older versions) its pyfunc."""
    from driftline.training import lean, packaging

    found = lean.load_version(settings, version)
    if found is not None:
        return found
    log.warning(
        "version %s has no lean form (registered before it existed): serving its MLflow "
        "pyfunc, slower (pandas per request); re-register it to get the lean form",
        version,
    )
    return PyfuncModel(packaging.load_version(settings, version))


@dataclass(frozen=True)
class LoadedModel:
    """One registered version, loaded and ready to score."""

    version: str
    model: Scorable


@dataclass(frozen=True)
class ModelSet:
    """The models serving right now (every slot but ``champion`` is optional)."""

    champion: LoadedModel | None = None
    canary: LoadedModel | None = None
    shadow: LoadedModel | None = None
    previous_champion: LoadedModel | None = None

    def get(self, slot: str) -> LoadedModel | None:
        """The model in ``slot`` (a variant, ``shadow`` or ``previous_champion``)."""
        found: LoadedModel | None = getattr(self, slot, None)
        return found

    def versions(self) -> dict[str, str]:
        """``slot -> version`` of the filled slots."""
        return {
            f.name: loaded.version
            for f in fields(self)
            if (loaded := getattr(self, f.name)) is not None
        }


class ModelProvider:
    """Holds the serving models; refreshed by :meth:`refresh` or the background poller."""

    def __init__(
        self,
        settings: Settings,
        *,
        resolve: Resolver | None = None,
        load: Loader | None = None,
        state: Callable[[], ServingState] | None = None,
    ) -> None:
        """Use the MLflow registry of ``settings`` unless ``resolve``/``state``/``load``.

        Args:
            settings: Registry location, model name and ``serve_poll_seconds``.
            resolve: ``alias -> version`` for each followed alias (no previous champion
                is then known until the champion changes).
            load: ``version -> model`` (default: lean form, else pyfunc).
            state: Replaces the registry read of aliases and previous champion.
        """
        self._poll_seconds = settings.serve_poll_seconds
        if state is None:
            state = (
                _resolved_state(resolve)
                if resolve is not None
                else lambda: registry.serving_state(settings)
            )
        self._state = state
        self._load = load or (lambda version: load_scorable(settings, version))
        self._models = ModelSet()
        self._control: CanaryControl | None = None
        # Registry reads are numbered; a poll older than the last applied read is
        # dropped, so one that read just before an admin write cannot undo its refresh.
        self._reads = itertools.count(1)
        self._applied_read = 0
        self._refresh_lock = threading.Lock()
        self._loaded: dict[str, LoadedModel] = {}  # finished background loads
        self._loading: dict[str, Future[None]] = {}
        self._failed: dict[str, float] = {}  # version -> monotonic time of the failure
        self._loader: ThreadPoolExecutor | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._registry_down = False
        self.load_errors: dict[str, int] = dict.fromkeys((*FOLLOWED, PREVIOUS), 0)

    @property
    def models(self) -> ModelSet:
        """A consistent snapshot of the serving models (take it once per request)."""
        return self._models

    @property
    def canary_control(self) -> CanaryControl | None:
        """The registry's canary control for the current canary, as of the last poll."""
        return self._control

    def refresh(self) -> ModelSet:
        """Read the aliases, load what changed (waiting for it) and swap; the new snapshot.

        A registry that cannot be read leaves the models as they are.
        """
        read = next(self._reads)
        try:
            state = self._state()
        except Exception:
            log.exception("could not read the serving aliases; models unchanged")
            return self._models
        return self._apply(state, wait=True, read=read)

    def notify(self) -> None:
        """Poll now (e.g. right after an alias change) instead of at the next interval."""
        self._wake.set()

    def _apply(self, state: ServingState, *, wait: bool, read: int) -> ModelSet:
        """Swap in the models ``state`` names that are loaded; start loading the others.

        ``read`` numbers the registry read that gave ``state``: a poll (not ``wait``)
        older than the read applied last is stale and changes nothing; a
        :meth:`refresh` always applies, as its caller waits for what it read.
        """
        with self._refresh_lock:
            if not wait and read < self._applied_read:
                return self._models
            self._applied_read = max(read, self._applied_read)
            current = self._models
            known = {m.version: m for m in (current.get(s) for s in _SLOTS) if m is not None}
            known.update(self._loaded)
            chosen: dict[str, LoadedModel | None] = {}
            for alias in FOLLOWED:
                version = state.aliases.get(alias)
                chosen[alias] = (
                    None
                    if version is None
                    else self._obtain(alias, version, known, wait) or current.get(alias)
                )
            chosen[PREVIOUS] = self._previous(current, chosen, state, known, wait)
            fresh = ModelSet(**chosen)
            self._announce(current, fresh)
            self._models = fresh  # the swap: one reference assignment
            self._follow(state.active_canary)
            keep = set(fresh.versions().values()) | set(state.aliases.values())
            self._loaded = {v: m for v, m in self._loaded.items() if v in keep}
            return fresh

    def _previous(
        self,
        current: ModelSet,
        chosen: dict[str, LoadedModel | None],
        state: ServingState,
        known: dict[str, LoadedModel],
        wait: bool,
    ) -> LoadedModel | None:
        """The champion before the current one: the one just replaced, else remembered."""
        champion, old = chosen[CHAMPION], current.champion
        if champion is None:
            return current.previous_champion
        if old is not None and old.version != champion.version:
            return old
        previous = current.previous_champion
        if previous is not None and previous.version != champion.version:
            return previous
        recorded = state.previous_champion
        if recorded and recorded != champion.version:
            return self._obtain(PREVIOUS, recorded, known, wait)
        return None

    def _obtain(
        self, slot: str, version: str, known: dict[str, LoadedModel], wait: bool
    ) -> LoadedModel | None:
        """``version`` if loaded; else load it now (``wait``) or start loading it."""
        if version in known:
            return known[version]
        if wait:
            try:
                model = LoadedModel(version, as_scorable(self._load(version)))
            except Exception:  # a bad version or registry outage must not take serving down
                self.load_errors[slot] += 1
                log.exception("could not load %s version %s; keeping what it serves", slot, version)
                return None
            gc.freeze()  # see the module docstring
            known[version] = model
            return model
        self._load_later(slot, version)
        return None

    def _load_later(self, slot: str, version: str) -> None:
        """Load ``version`` on the loader thread (once; a failure is retried later)."""
        if version in self._loading:
            return
        failed_at = self._failed.get(version)
        if failed_at is not None and time.monotonic() - failed_at < RETRY_SECONDS:
            return
        if self._loader is None:
            self._loader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model-loader")
        self._loading[version] = self._loader.submit(self._load_in_background, slot, version)

    def _load_in_background(self, slot: str, version: str) -> None:
        started = time.perf_counter()
        try:
            model = LoadedModel(version, as_scorable(self._load(version)))
        except Exception:
            self.load_errors[slot] += 1
            self._failed[version] = time.monotonic()
            log.exception("could not load %s version %s; keeping what it serves", slot, version)
            return
        finally:
            self._loading.pop(version, None)
        gc.freeze()  # see the module docstring
        log.info("loaded version %s in %.2f s", version, time.perf_counter() - started)
        self._failed.pop(version, None)
        with self._refresh_lock:
            self._loaded[version] = model
        self._wake.set()  # swap it in now, not at the next poll

    def _follow(self, control: CanaryControl | None) -> None:
        """Take the registry's canary control (logged when it changes)."""
        if control != self._control:
            if control is None:
                log.info("no canary control in the registry; serve_canary_weight applies")
            else:
                log.info(
                    "canary control: version %s weight %.3f %s (serving weight %.3f, by %s)",
                    control.version,
                    control.weight,
                    control.state,
                    control.serving_weight,
                    control.actor or "-",
                )
        self._control = control

    def _announce(self, current: ModelSet, fresh: ModelSet) -> None:
        before, after = current.versions(), fresh.versions()
        for slot in _SLOTS:
            if before.get(slot) != after.get(slot):
                if slot in after:
                    log.info("now serving %s version %s", slot, after[slot])
                else:
                    log.info("%s unset; no longer serving version %s", slot, before[slot])

    def start(self) -> None:
        """Start the background poller (its first poll runs at once)."""
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._poll, name="model-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the poller and the loader (a load in progress is abandoned)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._loader is not None:
            self._loader.shutdown(wait=False, cancel_futures=True)
            self._loader = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()
            self._poll_once()
            self._wake.wait(self._poll_seconds)

    def _poll_once(self) -> None:
        read = next(self._reads)
        try:
            state = self._state()
        except Exception as error:  # logged once per outage, not every poll
            if not self._registry_down:
                log.warning("cannot read the serving aliases (%s); models unchanged", error)
            self._registry_down = True
            return
        if self._registry_down:
            log.info("serving aliases readable again")
            self._registry_down = False
        try:
            self._apply(state, wait=False, read=read)
        except Exception:
            log.exception("model refresh failed; models unchanged")


_SLOTS: tuple[Slot, ...] = ("champion", "canary", "shadow", "previous_champion")


def _resolved_state(resolve: Resolver) -> Callable[[], ServingState]:
    """A state reader from a per-alias resolver (no recorded previous champion)."""

    def state() -> ServingState:
        found = {alias: resolve(alias) for alias in FOLLOWED}
        return ServingState({a: str(v) for a, v in found.items() if v is not None}, None)

    return state
