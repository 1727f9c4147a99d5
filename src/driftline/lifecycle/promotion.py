"""Registry state transitions: canary, promote, abort, rollback.

Every transition moves MLflow aliases on the one registered model and records the
decision as tags, so the registry alone answers "who moved what, when and why":

* :func:`start_canary` points ``canary`` at a version and sets its canary control.
* :func:`set_canary_control` changes the canary's weight or state (``running``,
  ``paused``, ``aborted``: registered-model tags ``canary.*`` that every scoring
  replica reads in the poll that reads the aliases); :func:`promote` and
  :func:`abort_canary` clear it.
* :func:`promote` moves ``champion`` to the canary's version and remembers the old
  champion (version tag ``previous_champion``, registered-model tag
  ``champion.previous``), which makes :func:`rollback` one step.
* :func:`abort_canary` drops the canary; the champion is untouched.
* :func:`rollback` restores the remembered champion and forgets it, so a second
  rollback without a new promotion is refused instead of ping-ponging.
* :func:`start_shadow` / :func:`stop_shadow` set and remove ``shadow``: a version the
  scoring service scores on a copy of the traffic, never answering with it.

Version tags written (``<action>`` is ``canary``, ``promote``, ``rollback``,
``rolled_back_from`` or ``restored``):

* ``decision.<action>``: the reason; ``decision.<action>.actor``: who; numbers as
  ``decision.<action>.<metric>``; the time as ``decision.<action>.at`` when ``now`` is
  given;
* ``decision.actor``: the actor of the latest decision on that version.

Nothing here reads the wall clock: times are recorded only when the caller passes
``now``. MLflow has no compare-and-set on aliases, so concurrent transitions on the
same model must be serialised by the caller (one orchestrator task at a time).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from driftline.core.settings import Settings
from driftline.lifecycle.alias_store import RegistryWrite, alias_store
from driftline.lifecycle.registry import (
    CANARY,
    CANARY_ACTOR_TAG,
    CANARY_STATE_TAG,
    CANARY_STATES,
    CANARY_TAGS,
    CANARY_UPDATED_TAG,
    CANARY_VERSION_TAG,
    CANARY_WEIGHT_TAG,
    CHAMPION,
    PREVIOUS_CHAMPION_TAG,
    SHADOW,
    CanaryControl,
    CanaryStateName,
    client,
    parse_canary_control,
    set_alias,
    tag_version,
    version_by_alias,
)

log = logging.getLogger(__name__)

Action = Literal["canary", "promote", "abort", "rollback", "shadow", "unshadow"]

#: Version tag on a champion naming the champion it replaced.
PREVIOUS_CHAMPION_VERSION_TAG = "previous_champion"


class PromotionError(RuntimeError):
    """A transition that the registry's current state does not allow."""


@dataclass(frozen=True)
class Transition:
    """What one transition did.

    Attributes:
        action: ``canary``, ``promote``, ``abort`` or ``rollback``.
        version: The version acted on: the new canary, the new champion, the aborted
            canary, or the restored champion.
        previous: The other version involved: the champion when a canary starts or is
            aborted, the replaced champion on promote, the demoted one on rollback
            (``None`` when there was none).
        reason: Why (free text, required).
        actor: Who or what decided (``cli``, a DAG run id, a person).
        metrics: Numbers the decision was based on.
        timestamp: When, if the caller supplied ``now``; never read from the clock here.
    """

    action: Action
    version: str
    previous: str | None
    reason: str
    actor: str
    metrics: Mapping[str, float] = field(default_factory=dict)
    timestamp: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (timestamp as ISO 8601 or ``None``)."""
        return {
            "action": self.action,
            "version": self.version,
            "previous": self.previous,
            "reason": self.reason,
            "actor": self.actor,
            "metrics": dict(self.metrics),
            "timestamp": self.timestamp.isoformat() if self.timestamp else None,
        }


def _decision_tags(
    key: str,
    reason: str,
    actor: str,
    metrics: Mapping[str, float] | None = None,
    now: datetime | None = None,
    **extra: str,
) -> dict[str, str]:
    """Tags recording one decision under ``decision.<key>``."""
    prefix = f"decision.{key}"
    tags = {prefix: reason, f"{prefix}.actor": actor, "decision.actor": actor}
    tags.update({f"{prefix}.{name}": repr(float(value)) for name, value in (metrics or {}).items()})
    tags.update({f"{prefix}.{name}": value for name, value in extra.items()})
    if now is not None:
        tags[f"{prefix}.at"] = now.isoformat()
    return tags


def record_decision(
    settings: Settings,
    version: str,
    key: str,
    reason: str,
    actor: str,
    metrics: Mapping[str, float] | None = None,
    now: datetime | None = None,
) -> None:
    """Record a decision that moves no alias (e.g. a gate verdict) as tags on ``version``."""
    _check_reason(reason, actor)
    tag_version(settings, str(version), _decision_tags(key, reason, actor, metrics, now))
    log.info(
        "decision %s on %s version %s by %s: %s", key, settings.model_name, version, actor, reason
    )


def _check_reason(reason: str, actor: str) -> None:
    if not reason.strip():
        raise ValueError("a transition needs a non-empty reason")
    if not actor.strip():
        raise ValueError("a transition needs a non-empty actor")


def _alias_version(settings: Settings, alias: str) -> str | None:
    found = version_by_alias(settings, alias)
    return None if found is None else str(found.version)


def _require_canary(settings: Settings) -> str:
    canary = _alias_version(settings, CANARY)
    if canary is None:
        raise PromotionError(
            f"no canary: alias {CANARY!r} is not set on model {settings.model_name!r} "
            "(start one with start_canary first)"
        )
    return canary


def _delete_alias(settings: Settings, alias: str) -> None:
    client(settings).delete_registered_model_alias(settings.model_name, alias)
    log.info("alias %s removed from %s", alias, settings.model_name)


def _model_tags(settings: Settings) -> dict[str, str]:
    return dict(client(settings).get_registered_model(settings.model_name).tags or {})


def start_canary(
    settings: Settings,
    version: str,
    *,
    weight: float,
    reason: str,
    actor: str,
    now: datetime | None = None,
) -> Transition:
    """Point ``canary`` at ``version`` and record why.

    Args:
        settings: Registry location and model name.
        version: The registered version to try on live traffic.
        weight: Share of users routed to it: recorded on the version and set as the
            canary control that every scoring replica follows (state ``running``).
        reason: Why this version goes to canary (e.g. the staging gate's verdict).
        actor: Who or what decided.
        now: Decision time to record as ``canary.started``; omitted when ``None``.

    Returns:
        The transition (``previous`` is the current champion, if any).

    Raises:
        ValueError: ``weight`` outside [0, 1] or an empty reason/actor.
        PromotionError: ``version`` is already the champion.
    """
    _check_reason(reason, actor)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"canary weight must lie in [0, 1], got {weight}")
    version = str(version)
    champion = _alias_version(settings, CHAMPION)
    if champion == version:
        raise PromotionError(f"version {version} is already the champion of {settings.model_name}")
    replaced = _alias_version(settings, CANARY)
    tags = {"canary.weight": repr(float(weight)), **_decision_tags("canary", reason, actor)}
    if now is not None:
        tags["canary.started"] = now.isoformat()
    tag_version(settings, version, tags)
    # The control before the alias: a replica whose poll sees ``canary`` at ``version``
    # also sees its control, never the settings' default for a moment.
    stamp = "" if now is None else now.isoformat()
    _write_canary_control(settings, CanaryControl(version, float(weight), "running", actor, stamp))
    set_alias(settings, CANARY, version)
    log.info(
        "canary: %s version %s at weight %.3f (champion %s, replaced canary %s) by %s: %s",
        settings.model_name,
        version,
        weight,
        champion,
        replaced,
        actor,
        reason,
    )
    return Transition("canary", version, champion, reason, actor, {"weight": weight}, now)


def set_canary_control(
    settings: Settings,
    *,
    actor: str,
    weight: float | None = None,
    state: CanaryStateName | None = None,
    now: datetime | None = None,
) -> CanaryControl:
    """Set the canary's weight and/or state for every scoring replica.

    The control is the registered-model tags ``canary.weight``, ``canary.state`` and
    ``canary.version`` (the canary it was set for), plus who changed it and when. What
    is not given keeps its recorded value when the control belongs to the current
    canary, else ``settings.serve_canary_weight`` and ``running``. Replicas apply it at
    their next alias poll: the serving weight is ``weight`` while ``running`` and 0
    when ``paused`` or ``aborted``.

    Args:
        settings: Registry location, model name and the default weight.
        actor: Who changes it.
        weight: Share of users routed to the canary, in [0, 1].
        state: ``running``, ``paused`` or ``aborted``.
        now: Time recorded as ``canary.updated``; omitted when ``None``.

    Returns:
        The control now recorded.

    Raises:
        ValueError: ``weight`` outside [0, 1], an unknown state or an empty actor.
        PromotionError: No version holds ``canary``.
    """
    if not actor.strip():
        raise ValueError("a canary control change needs an actor")
    if weight is not None and not 0.0 <= weight <= 1.0:
        raise ValueError(f"canary weight must lie in [0, 1], got {weight}")
    if state is not None and state not in CANARY_STATES:
        raise ValueError(f"canary state must be one of {CANARY_STATES}, got {state!r}")
    mlflow_client = client(settings)
    model = mlflow_client.get_registered_model(settings.model_name)
    canary = (model.aliases or {}).get(CANARY)
    if canary is None:
        raise PromotionError(
            f"no canary: alias {CANARY!r} is not set on model {settings.model_name!r}"
        )
    recorded = parse_canary_control(dict(model.tags or {}))
    if recorded is None or recorded.version != str(canary):
        recorded = CanaryControl(str(canary), settings.serve_canary_weight)
    control = CanaryControl(
        str(canary),
        recorded.weight if weight is None else float(weight),
        recorded.state if state is None else state,
        actor,
        "" if now is None else now.isoformat(),
    )
    _write_canary_control(settings, control)
    return control


def _write_canary_control(settings: Settings, control: CanaryControl) -> None:
    """Record ``control`` as the registered-model tags, its version tag first.

    When a new canary replaces another, a poll between two tag writes finds a control
    for a version that is not the canary yet, so the replaced canary falls back to
    ``serve_canary_weight`` rather than taking a mix of the two controls.
    """
    tags = {
        CANARY_VERSION_TAG: control.version,
        CANARY_WEIGHT_TAG: repr(control.weight),
        CANARY_STATE_TAG: control.state,
        CANARY_ACTOR_TAG: control.actor,
        CANARY_UPDATED_TAG: control.updated,
    }
    mlflow_client = client(settings)
    for key, value in tags.items():
        mlflow_client.set_registered_model_tag(settings.model_name, key, value)
    log.info(
        "canary control: version %s weight %.3f %s by %s",
        control.version,
        control.weight,
        control.state,
        control.actor,
    )


def clear_canary_control(settings: Settings) -> None:
    """Remove the canary control tags (replicas fall back to ``serve_canary_weight``)."""
    tags = _model_tags(settings)
    mlflow_client = client(settings)
    for key in CANARY_TAGS:
        if key in tags:
            mlflow_client.delete_registered_model_tag(settings.model_name, key)


def promote(
    settings: Settings,
    *,
    reason: str,
    actor: str,
    metrics: Mapping[str, float] | None = None,
    now: datetime | None = None,
) -> Transition:
    """Make the canary the champion, remembering the old champion for rollback.

    The previous champion is recorded first, then ``champion`` moves and ``canary`` is
    removed, so an interruption leaves a state that serves correctly (at worst both
    aliases on the new version) and that calling :func:`promote` again completes.

    Args:
        settings: Registry location and model name.
        reason: Why (e.g. the canary analysis' verdict).
        actor: Who or what decided.
        metrics: Numbers the decision compared, recorded as tags.
        now: Decision time to record; omitted when ``None``.

    Returns:
        The transition (``previous`` is the replaced champion, if any).

    Raises:
        PromotionError: No version holds ``canary``.
    """
    _check_reason(reason, actor)
    canary = _require_canary(settings)
    old = _alias_version(settings, CHAMPION)
    mlflow_client = client(settings)
    if old == canary:
        # An interrupted promotion left both aliases on one version: finish it. The
        # previous champion was recorded before the alias moved, so it is kept.
        old = _model_tags(settings).get(PREVIOUS_CHAMPION_TAG) or None
    elif old is not None:
        # Record what rollback restores before anything moves.
        tag_version(settings, canary, {PREVIOUS_CHAMPION_VERSION_TAG: old})
        mlflow_client.set_registered_model_tag(settings.model_name, PREVIOUS_CHAMPION_TAG, old)
    elif PREVIOUS_CHAMPION_TAG in _model_tags(settings):
        # A first champion (or one after the aliases were cleared) has nothing to restore.
        mlflow_client.delete_registered_model_tag(settings.model_name, PREVIOUS_CHAMPION_TAG)
    set_alias(settings, CHAMPION, canary)
    _delete_alias(settings, CANARY)
    clear_canary_control(settings)
    tags = _decision_tags("promote", reason, actor, metrics, now)
    if old is not None:
        tag_version(settings, old, {"champion.replaced_by": canary})
    tag_version(settings, canary, tags)
    log.info(
        "promote: %s champion %s -> %s by %s: %s %s",
        settings.model_name,
        old,
        canary,
        actor,
        reason,
        dict(metrics or {}),
    )
    return Transition("promote", canary, old, reason, actor, dict(metrics or {}), now)


def abort_canary(
    settings: Settings,
    *,
    reason: str,
    actor: str,
    metrics: Mapping[str, float] | None = None,
    now: datetime | None = None,
) -> Transition:
    """Drop the canary (tagged ``decision.rollback``); the champion is untouched.

    Args:
        settings: Registry location and model name.
        reason: Why the canary failed.
        actor: Who or what decided.
        metrics: Numbers the decision compared, recorded as tags.
        now: Decision time to record; omitted when ``None``.

    Returns:
        The transition (``previous`` is the champion that keeps serving).

    Raises:
        PromotionError: No version holds ``canary``.
    """
    _check_reason(reason, actor)
    canary = _require_canary(settings)
    champion = _alias_version(settings, CHAMPION)
    _delete_alias(settings, CANARY)
    clear_canary_control(settings)
    tag_version(settings, canary, _decision_tags("rollback", reason, actor, metrics, now))
    log.info(
        "abort canary: %s version %s dropped (champion %s stays) by %s: %s %s",
        settings.model_name,
        canary,
        champion,
        actor,
        reason,
        dict(metrics or {}),
    )
    return Transition("abort", canary, champion, reason, actor, dict(metrics or {}), now)


def rollback(
    settings: Settings, *, reason: str, actor: str, now: datetime | None = None
) -> Transition:
    """Restore the previous champion in one step.

    The demoted version is tagged ``decision.rolled_back_from`` (with ``.to``, the
    restored version) and the restored one ``decision.restored`` (with ``.from``). The
    registered model's ``champion.previous`` is then removed: rolling back again needs a
    new promotion first, so two rollbacks never swap the same pair back and forth.

    Args:
        settings: Registry location and model name.
        reason: Why the champion is rolled back.
        actor: Who or what decided.
        now: Decision time to record; omitted when ``None``.

    Returns:
        The transition (``version`` restored, ``previous`` demoted).

    Raises:
        PromotionError: No champion, or no previous champion recorded.
    """
    _check_reason(reason, actor)
    name = settings.model_name
    store = alias_store(settings)
    state = store.model_state()
    current = state.aliases.get(CHAMPION)
    if current is None:
        raise PromotionError(f"nothing to roll back: model {name!r} has no champion")
    restore = state.tags.get(PREVIOUS_CHAMPION_TAG, "")
    if not restore:
        restored_from = store.version_tags(current).get("decision.restored.from")
        hint = (
            f"version {current} was itself restored by a rollback from version "
            f"{restored_from}; promote a new champion before rolling back again"
            if restored_from
            else f"version {current} replaced no recorded champion"
        )
        raise PromotionError(f"no previous champion recorded for model {name!r}: {hint}")
    if restore == current:
        raise PromotionError(
            f"the recorded previous champion of {name!r} is the current one ({current}); "
            "the registry was changed outside driftline's transitions"
        )
    store.apply(
        RegistryWrite(
            aliases={CHAMPION: restore},
            deleted_model_tags=(PREVIOUS_CHAMPION_TAG,),
            version_tags={
                current: _decision_tags("rolled_back_from", reason, actor, None, now, to=restore),
                restore: _decision_tags("restored", reason, actor, None, now, **{"from": current}),
            },
        )
    )
    log.warning(
        "rollback: %s champion %s -> %s (restored) by %s: %s", name, current, restore, actor, reason
    )
    return Transition("rollback", restore, current, reason, actor, {}, now)


def start_shadow(
    settings: Settings, version: str, *, reason: str, actor: str, now: datetime | None = None
) -> Transition:
    """Point ``shadow`` at ``version``: scored beside the champion, never answering.

    Returns:
        The transition (``previous`` is the version that held ``shadow`` before).

    Raises:
        ValueError: An empty reason or actor.
    """
    _check_reason(reason, actor)
    version = str(version)
    replaced = _alias_version(settings, SHADOW)
    set_alias(settings, SHADOW, version)
    tag_version(settings, version, _decision_tags("shadow", reason, actor, None, now))
    log.info(
        "shadow: %s version %s (replaced %s) by %s: %s",
        settings.model_name,
        version,
        replaced,
        actor,
        reason,
    )
    return Transition("shadow", version, replaced, reason, actor, {}, now)


def stop_shadow(
    settings: Settings, *, reason: str, actor: str, now: datetime | None = None
) -> Transition:
    """Remove ``shadow`` (tagged ``decision.unshadow`` on the version it held).

    Raises:
        PromotionError: No version holds ``shadow``.
    """
    _check_reason(reason, actor)
    version = _alias_version(settings, SHADOW)
    if version is None:
        raise PromotionError(f"no shadow: alias {SHADOW!r} is not set on {settings.model_name!r}")
    _delete_alias(settings, SHADOW)
    tag_version(settings, version, _decision_tags("unshadow", reason, actor, None, now))
    return Transition("unshadow", version, None, reason, actor, {}, now)
