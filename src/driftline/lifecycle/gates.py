"""The gates a model version passes on its way to ``champion``, each stated once here.

Both gates judge the numbers of the training pipeline's ``evaluate`` step, which scores
the candidate and the champion of that moment on the same holdout: the most recent
labelled days of the candidate's training window. They differ in when they run, what
they demand, and why:

* :func:`staging_gate` runs at registration (the ``register`` step of every training
  run, on the evaluation just made). The candidate must clear the PR-AUC floor
  ``gate_min_pr_auc``, be *no more than* ``gate_champion_tolerance`` worse than the
  champion, and pass the behavioural checks. It earns the alias ``staging``: the version
  is fit to serve, not necessarily better; the tolerance absorbs the noise of a PR-AUC
  measured on a few holdout days.
* :func:`retrain_gate` runs before a canary (``retrain_promote``, on the tags the
  registration left). The candidate must have passed the staging gate, have been
  evaluated against
  the version that is champion *now* (else the numbers compare it with a model that no
  longer serves), and *beat* that champion's PR-AUC on those same days by more than
  ``retrain_min_improvement``. Replacing the serving model has to buy something, so
  being nearly as good is not enough here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from driftline.core.settings import Settings
from driftline.lifecycle import registry


@dataclass(frozen=True)
class GateResult:
    """One gate's verdict on one candidate.

    Attributes:
        passed: Whether the candidate passed.
        reasons: The verdict in sentences: each failed check of the staging gate (none
            when it passes), the one sentence of the retrain gate's verdict.
        metrics: The numbers compared, and the bounds they were held to.
        version: The candidate's registered version (None: judged before registration).
        champion: The champion version it was compared with (None: there is none, or
            its version was not recorded).
    """

    passed: bool
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)
    version: str | None = None
    champion: str | None = None

    @property
    def reason(self) -> str:
        """The verdict in one line."""
        return "; ".join(self.reasons) or "all gates passed"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (with ``reason``); :meth:`from_dict` reads it back."""
        return {**asdict(self), "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GateResult:
        """The result :meth:`to_dict` wrote."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


def staging_gate(
    candidate: Mapping[str, Any],
    champion: Mapping[str, Any] | None,
    behaviour_passed: bool,
    settings: Settings,
) -> GateResult:
    """The registration gate: fit to serve (see the module docstring).

    Passes when the candidate's holdout PR-AUC is at least ``gate_min_pr_auc``, at
    least the champion's minus ``gate_champion_tolerance`` (when there is a champion)
    and the behavioural checks passed.

    Args:
        candidate: The candidate's evaluation metrics (``pr_auc``).
        champion: The champion's metrics on the same holdout (``pr_auc``, ``version``),
            or None when there is no champion.
        behaviour_passed: Whether the behavioural checks passed.
        settings: ``gate_min_pr_auc`` and ``gate_champion_tolerance``.
    """
    reasons: list[str] = []
    floor = settings.gate_min_pr_auc
    metrics: dict[str, float] = {"pr_auc": candidate["pr_auc"], "floor": floor}
    if candidate["pr_auc"] < floor:
        reasons.append(f"pr_auc {candidate['pr_auc']:.4f} is below the floor {floor:.4f}")
    if champion is not None:
        allowed = champion["pr_auc"] - settings.gate_champion_tolerance
        metrics.update(champion_pr_auc=champion["pr_auc"], champion_allowed=allowed)
        if candidate["pr_auc"] < allowed:
            reasons.append(
                f"pr_auc {candidate['pr_auc']:.4f} is worse than the champion's "
                f"{champion['pr_auc']:.4f} beyond the tolerance "
                f"{settings.gate_champion_tolerance:.4f}"
            )
    if not behaviour_passed:
        reasons.append("behavioural checks failed (directional amount or invariance)")
    compared = None if champion is None or "version" not in champion else str(champion["version"])
    return GateResult(passed=not reasons, reasons=reasons, metrics=metrics, champion=compared)


def retrain_gate(
    version: str, tags: Mapping[str, str], champion: str | None, settings: Settings
) -> GateResult:
    """The canary gate of a retrain: better than the champion (see the module docstring).

    Passes when the candidate passed :func:`staging_gate` (tag ``gate.staging``) and
    either there is no champion, or the champion is the one it was evaluated against
    (tag ``champion.version``) and its PR-AUC (tag ``candidate.pr_auc``) exceeds that
    champion's on the same holdout (tag ``champion.pr_auc``) by more than
    ``retrain_min_improvement``.

    Args:
        version: The candidate version.
        tags: The candidate's version tags, as the ``register`` step wrote them.
        champion: The version holding ``champion`` now (None: there is none).
        settings: ``retrain_min_improvement``.
    """
    candidate_pr = registry.float_tag(tags, "candidate.pr_auc")
    metrics = {"candidate_pr_auc": candidate_pr} if candidate_pr is not None else {}

    def verdict(passed: bool, reason: str) -> GateResult:
        return GateResult(passed, [reason], metrics, version, champion)

    if tags.get("gate.staging") != "passed":
        return verdict(False, f"registration gates failed: {tags.get('gate.reasons', 'unknown')}")
    if champion is None:
        return verdict(True, "no champion yet: the candidate is the first")
    compared = tags.get("champion.version")
    champion_pr = registry.float_tag(tags, "champion.pr_auc")
    if compared != champion or champion_pr is None or candidate_pr is None:
        return verdict(
            False,
            f"the candidate was evaluated against champion {compared}, but the champion "
            f"is now {champion}: retrain to compare on the same holdout",
        )
    metrics["champion_pr_auc"] = champion_pr
    margin = candidate_pr - champion_pr
    passed = margin > settings.retrain_min_improvement
    return verdict(
        passed,
        f"candidate PR-AUC {candidate_pr:.3f} {'beats' if passed else 'does not beat'} "
        f"champion {champion}'s {champion_pr:.3f} on the most recent labelled days "
        f"(margin {margin:+.3f}, needed > {settings.retrain_min_improvement:+.3f})",
    )
