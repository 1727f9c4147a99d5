"""The MLflow model registry: one registered model, states as aliases, lineage as tags.

A trained model is logged as an MLflow ``pyfunc`` that wraps the torch module *and*
its fitted preprocessor, so anything that loads ``models:/<name>@<alias>`` applies
exactly the training transform. Registry states are the aliases ``staging``,
``canary``, ``champion`` and ``shadow`` (:data:`ALIASES`); legacy stages are never
used. Every decision (gate passed or failed, why, the numbers compared) is a tag on the
model version.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from driftline.core.logs import route_library_logs
from driftline.core.settings import PROJECT_ROOT, Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

STAGING, CANARY, CHAMPION, SHADOW = "staging", "canary", "champion", "shadow"
#: Every registry state, the one list of them: ``shadow`` is scored on a copy of the
#: traffic without ever answering (see ``driftline.serving.shadow``).
ALIASES: tuple[str, ...] = (STAGING, CANARY, CHAMPION, SHADOW)
#: Registered-model tag naming the champion that a rollback would restore.
PREVIOUS_CHAMPION_TAG = "champion.previous"
#: Registered-model tags holding the canary control that every scoring replica follows
#: (written only by :mod:`driftline.lifecycle.promotion`, ``start_canary`` and
#: ``set_canary_control``): the share
#: of users routed to the canary, its state, and the canary version they were set for
#: (a control left over from another canary is ignored).
CANARY_WEIGHT_TAG = "canary.weight"
CANARY_STATE_TAG = "canary.state"
CANARY_VERSION_TAG = "canary.version"
#: Who last changed the control, and when (wall clock, ISO 8601).
CANARY_ACTOR_TAG = "canary.actor"
CANARY_UPDATED_TAG = "canary.updated"
#: Every canary control tag (what promote and abort remove).
CANARY_TAGS: tuple[str, ...] = (
    CANARY_WEIGHT_TAG,
    CANARY_STATE_TAG,
    CANARY_VERSION_TAG,
    CANARY_ACTOR_TAG,
    CANARY_UPDATED_TAG,
)
CanaryStateName = Literal["running", "paused", "aborted"]
CANARY_STATES: tuple[CanaryStateName, ...] = ("running", "paused", "aborted")


#: The entry-point group of MLflow's REST request-header plugins, and the package whose
#: plugin in it :func:`client` leaves out (see :func:`_load_header_providers`).
HEADER_PROVIDER_GROUP = "mlflow.request_header_provider"
SKIPPED_HEADER_PLUGIN_PACKAGE = "feast"


def _load_header_providers() -> None:
    """Import MLflow's request-header registry without Feast's plugin in it.

    MLflow loads every ``mlflow.request_header_provider`` entry point when that registry
    is first imported (on the first REST call to a tracking server). Feast registers one
    (``FeastMLflowHeaderProvider``) whose import pulls in all of Feast (pandas, pyarrow,
    protobuf: seconds), and it only adds a header while Feast's own MLflow data source
    has set a token in a context variable, which driftline never uses: leaving it out
    changes no request. Other plugins load as usual. No-op once the registry exists.
    """
    if "mlflow.tracking.request_header.registry" in sys.modules:
        return
    from mlflow.utils import plugins

    original = plugins.get_entry_points

    def without_skipped(group: str) -> list[Any]:
        found = original(group)
        if group != HEADER_PROVIDER_GROUP:
            return found
        prefix = SKIPPED_HEADER_PLUGIN_PACKAGE + "."
        return [entry for entry in found if not entry.value.startswith(prefix)]

    plugins.get_entry_points = without_skipped
    try:
        import mlflow.tracking.request_header.registry  # noqa: F401
    finally:
        plugins.get_entry_points = original


def client(settings: Settings) -> MlflowClient:
    """An MLflow client for the configured tracking server and registry.

    MLflow's own stderr handler is turned off first (:func:`route_library_logs`), so
    its INFO lines reach logging at INFO, not a task log's stderr at ``error``; MLflow's
    request-header plugins are loaded without Feast's (:func:`_load_header_providers`).
    """
    route_library_logs()
    _load_header_providers()
    from mlflow import MlflowClient

    return MlflowClient(
        tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
    )


def experiment_id(settings: Settings) -> str:
    """Id of the training experiment, created on first use under the artifact root.

    The artifact root is explicit: MLflow's default with a database tracking URI is
    ``./mlruns`` in whatever directory the process happens to run in. Processes that
    race to create it (parallel pipeline steps) all get the one that was created.
    """
    from mlflow.exceptions import MlflowException

    mlflow_client = client(settings)
    name = settings.mlflow_experiment
    found = mlflow_client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(
            mlflow_client.create_experiment(name, artifact_location=settings.mlflow_artifact_uri)
        )
    except MlflowException:
        found = mlflow_client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def git_commit() -> str:
    """The code commit: ``DRIFTLINE_GIT_COMMIT`` (set in images) or ``git rev-parse``."""
    import os

    if commit := os.environ.get("DRIFTLINE_GIT_COMMIT", "").strip():
        return commit
    try:
        done = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=PROJECT_ROOT,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return done.stdout.strip() or "unknown"


def version_by_alias(settings: Settings, alias: str) -> ModelVersion | None:
    """The model version holding ``alias``, or ``None`` when no version holds it."""
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(settings.model_name, alias)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return None
        raise


@dataclass(frozen=True)
class CanaryControl:
    """The canary's routing as recorded in the registry (registered-model tags).

    Attributes:
        version: The canary version the control was set for.
        weight: Share of users routed to the canary while ``running``.
        state: ``running``, ``paused`` or ``aborted`` (the last two route nobody).
        actor: Who last changed it.
        updated: When (ISO 8601), or ``""``.
    """

    version: str
    weight: float
    state: CanaryStateName = "running"
    actor: str = ""
    updated: str = ""

    @property
    def serving_weight(self) -> float:
        """The share to route: ``weight`` while running, 0 when paused or aborted."""
        return self.weight if self.state == "running" else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The control and its serving weight, JSON-ready."""
        return {
            "version": self.version,
            "weight": self.weight,
            "state": self.state,
            "serving_weight": self.serving_weight,
            "actor": self.actor,
            "updated": self.updated,
        }


@functools.cache
def _warn_malformed(weight: str, state: str) -> None:
    """Log a malformed control once per value (it is read on every poll)."""
    log.warning("ignoring a malformed canary control: weight %r, state %r", weight, state)


def parse_canary_control(tags: Mapping[str, str]) -> CanaryControl | None:
    """The control in registered-model ``tags``; ``None`` when absent or malformed.

    A malformed control (an edit by hand outside driftline) is logged and ignored, so
    serving falls back to ``serve_canary_weight`` rather than guessing.
    """
    version, raw = tags.get(CANARY_VERSION_TAG), tags.get(CANARY_WEIGHT_TAG)
    if not version or raw is None:
        return None
    state = tags.get(CANARY_STATE_TAG) or "running"
    try:
        weight = float(raw)
    except ValueError:
        weight = float("nan")
    if not 0.0 <= weight <= 1.0 or state not in CANARY_STATES:
        _warn_malformed(raw, state)
        return None
    return CanaryControl(
        version,
        weight,
        state,
        tags.get(CANARY_ACTOR_TAG, ""),
        tags.get(CANARY_UPDATED_TAG, ""),
    )


@dataclass(frozen=True)
class ServingState:
    """What the scoring service follows, read in one registry call.

    Attributes:
        aliases: ``alias -> version`` for every alias that is set.
        previous_champion: The champion a rollback would restore (registered-model tag
            ``champion.previous``), or ``None``.
        canary: The recorded canary control, or ``None`` when the registry has none.
    """

    aliases: dict[str, str]
    previous_champion: str | None
    canary: CanaryControl | None = None

    @property
    def active_canary(self) -> CanaryControl | None:
        """:attr:`canary` if it was set for the version holding ``canary`` now."""
        current = self.aliases.get(CANARY)
        if self.canary is None or current is None or self.canary.version != current:
            return None
        return self.canary


def serving_state(settings: Settings) -> ServingState:
    """Every alias, the previous champion and the canary control (one registry call).

    Cheap enough to poll every fraction of a second: no model is touched. A model not
    registered yet has no aliases.
    """
    from mlflow.exceptions import MlflowException

    try:
        model = client(settings).get_registered_model(settings.model_name)
    except MlflowException as error:
        if error.error_code in {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}:
            return ServingState({}, None)
        raise
    aliases = {str(alias): str(version) for alias, version in (model.aliases or {}).items()}
    tags = dict(model.tags or {})
    previous = tags.get(PREVIOUS_CHAMPION_TAG) or None
    return ServingState(aliases, previous, parse_canary_control(tags))


def tag_version(settings: Settings, version: str, tags: Mapping[str, Any]) -> None:
    """Set ``tags`` (stringified) on one version of the registered model."""
    mlflow_client = client(settings)
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(settings.model_name, version, key, str(value))


def float_tag(tags: Mapping[str, str], key: str) -> float | None:
    """The number in tag ``key`` (None when the tag is missing, empty or ``none``)."""
    value = tags.get(key)
    return float(value) if value not in (None, "", "none") else None


def set_alias(settings: Settings, alias: str, version: str) -> None:
    """Point ``alias`` at ``version``."""
    client(settings).set_registered_model_alias(settings.model_name, alias, version)
    log.info("alias %s -> %s version %s", alias, settings.model_name, version)


def describe_version(settings: Settings, version: ModelVersion) -> dict[str, Any]:
    """A registered version as the register step reports it (read back from its tags)."""
    tags = version.tags or {}
    passed = tags.get("gate.staging") == "passed"
    return {
        "model_name": settings.model_name,
        "version": str(version.version),
        "alias": STAGING if passed else "",
        "gate_passed": passed,
        "gate_reasons": [] if passed else [tags.get("gate.reasons", "")],
        "metrics": {"pr_auc": float(tags.get("candidate.pr_auc", "nan"))},
        "mlflow_run_id": str(version.run_id),
    }


def find_version(
    settings: Settings, request_id: str, data_version: str | None = None
) -> ModelVersion | None:
    """The newest version registered for ``request_id`` (and ``data_version``, if given)."""
    versions = client(settings).search_model_versions(f"name = '{settings.model_name}'")
    for version in sorted(versions, key=lambda v: int(v.version), reverse=True):
        tags = version.tags or {}
        if tags.get("request_id") != request_id:
            continue
        if data_version is None or tags.get("data_version") == data_version:
            return version
    return None
