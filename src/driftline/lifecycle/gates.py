"""The gates a model version passes on its way to ``champion``, each stated once here."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from driftline.core.settings import Settings


@dataclass(frozen=True)
class GateResult:
    """The staging gate's verdict, with every check's numbers."""

    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)


def staging_gate(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    behaviour_passed: bool,
    settings: Settings,
) -> GateResult:
    """Apply the gates in settings: absolute PR-AUC floor, no worse than the champion
    beyond the tolerance, and the behavioural checks."""
    reasons: list[str] = []
    floor = settings.gate_min_pr_auc
    checks: dict[str, Any] = {"pr_auc": candidate["pr_auc"], "floor": floor}
    if candidate["pr_auc"] < floor:
        reasons.append(f"pr_auc {candidate['pr_auc']:.4f} is below the floor {floor:.4f}")
    if champion is not None:
        allowed = champion["pr_auc"] - settings.gate_champion_tolerance
        checks.update(champion_pr_auc=champion["pr_auc"], champion_allowed=allowed)
        if candidate["pr_auc"] < allowed:
            reasons.append(
                f"pr_auc {candidate['pr_auc']:.4f} is worse than the champion's "
                f"{champion['pr_auc']:.4f} beyond the tolerance "
                f"{settings.gate_champion_tolerance:.4f}"
            )
    if not behaviour_passed:
        reasons.append("behavioural checks failed (directional amount or invariance)")
    return GateResult(passed=not reasons, reasons=reasons, checks=checks)
