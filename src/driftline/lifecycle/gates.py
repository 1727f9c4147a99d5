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
* :func:`regime_gate` runs with :func:`retrain_gate` when the retrain was caused by
  drift: the holdout above may hold a single post-drift day, so promotion also needs
  evidence on the *new regime*. Both models score the same post-drift labelled rows
  the candidate did not train on (:class:`RegimeEvidence`); at least
  ``gate_min_positives`` accounts must have a labelled fraud among them (else:
  insufficient evidence, not promoted; a burst of frauds on one card is one piece of
  evidence, :func:`~driftline.core.evidence.fraud_accounts`), the candidate's PR-AUC
  must exceed the champion's by more than ``retrain_min_improvement``, and on no
  segment with at least ``gate_segment_min_positives`` such accounts (each value of the
  ``gate_segments`` inputs) may the candidate be significantly worse: the upper end of
  the paired bootstrap interval of candidate minus champion below zero, each interval at
  ``1 - (1 - drift_confidence) / m`` for ``m`` judged segments (Bonferroni: judging more
  segments must not make a false veto more likely).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np

from driftline.core.evidence import (
    Estimate,
    average_precision,
    effective_positives,
    paired_difference_interval,
)
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


#: Characters an MLflow tag key may not hold (segment values become part of keys).
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class RegimeEvidence:
    """Candidate and champion scored on the same post-drift labelled rows.

    Attributes:
        labels: 1 for a reported fraud, per row.
        candidate: The candidate's scores of the rows.
        champion: The champion's scores of the same rows.
        segments: Per segment input (e.g. ``channel``), its value on each row.
        days: The transaction days the rows cover (ISO dates).
        drift_start: The first drifted day.
        groups: The fraud campaign of each row
            (:func:`~driftline.core.evidence.row_groups`), or None: the paired interval
            then resamples campaigns, not rows (frauds come in bursts of one card,
            account or merchant; see :mod:`driftline.core.evidence`).
        accounts: The account (``user_id``) of each row, or None: the minimums then
            count fraud rows instead of accounts with a fraud.
    """

    labels: np.ndarray
    candidate: np.ndarray
    champion: np.ndarray
    segments: Mapping[str, np.ndarray] = field(default_factory=dict)
    days: tuple[str, ...] = ()
    drift_start: str = ""
    groups: np.ndarray | None = None
    accounts: np.ndarray | None = None

    def fraud_accounts(self, rows: np.ndarray | None = None) -> int:
        """Accounts with a labelled fraud, among ``rows`` (a mask) or all rows."""
        if rows is None:
            return effective_positives(self.labels, self.accounts)
        accounts = None if self.accounts is None else self.accounts[rows]
        return effective_positives(self.labels[rows], accounts)


def _paired(
    labels: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    settings: Settings,
    confidence: float | None = None,
    groups: np.ndarray | None = None,
) -> Estimate:
    return paired_difference_interval(
        labels,
        candidate,
        champion,
        samples=settings.drift_bootstrap_samples,
        confidence=settings.drift_confidence if confidence is None else confidence,
        groups=groups,
    )


def _span(estimate: Estimate) -> str:
    if estimate.low is None or estimate.high is None:
        return ""
    return f" [{estimate.low:+.3f}, {estimate.high:+.3f}]"


def _worse_segments(
    evidence: RegimeEvidence, settings: Settings
) -> tuple[list[str], dict[str, float]]:
    """Segments with enough fraud accounts where the candidate is significantly worse.

    Every judged segment is one more chance of a false veto, so the family-wise error
    is held at ``1 - drift_confidence`` (Bonferroni): with ``m`` judged segments each
    interval is taken at ``1 - (1 - drift_confidence) / m``.
    """
    judged: list[tuple[str, str, np.ndarray, int]] = []
    for column, values in evidence.segments.items():
        for value in sorted({str(v) for v in values}):
            rows = np.asarray([str(v) == value for v in values])
            frauds = int(evidence.labels[rows].sum())
            accounts = evidence.fraud_accounts(rows)
            if accounts >= settings.gate_segment_min_positives and frauds < int(rows.sum()):
                judged.append((column, value, rows, accounts))
    confidence = 1.0 - (1.0 - settings.drift_confidence) / max(1, len(judged))
    worse: list[str] = []
    metrics: dict[str, float] = {}
    for column, value, rows, accounts in judged:
        labels = evidence.labels[rows]
        groups = None if evidence.groups is None else evidence.groups[rows]
        estimate = _paired(
            labels, evidence.candidate[rows], evidence.champion[rows], settings, confidence, groups
        )
        if estimate.value is None:
            continue
        metrics[f"segment.{column}.{_SAFE.sub('_', value)}.diff"] = estimate.value
        if estimate.below_zero:
            worse.append(
                f"{column}={value} ({int(labels.sum())} frauds, {accounts} accounts): "
                f"{estimate.value:+.3f}{_span(estimate)} at {confidence:.1%}"
            )
    return worse, metrics


def regime_gate(evidence: RegimeEvidence, settings: Settings) -> GateResult:
    """Promotion evidence on the new regime (see the module docstring).

    Args:
        evidence: Both models' scores on the same post-drift labelled rows the
            candidate did not train on.
        settings: ``gate_min_positives``, ``gate_segment_min_positives``,
            ``retrain_min_improvement`` and the bootstrap (``drift_bootstrap_samples``,
            ``drift_confidence``).

    Returns:
        The verdict; ``metrics`` holds ``regime.*`` numbers (rows, positives, both
        PR-AUCs, the difference and its interval) and one ``segment.*`` difference per
        judged segment.
    """
    labels = np.asarray(evidence.labels, dtype=np.int64)
    positives = int(labels.sum())
    accounts = evidence.fraud_accounts()
    where = (
        f"post-drift days {', '.join(evidence.days) or 'none'} (drift from {evidence.drift_start})"
    )
    metrics: dict[str, float] = {
        "regime.rows": float(labels.size),
        "regime.positives": float(positives),
        "regime.fraud_accounts": float(accounts),
    }
    if accounts < settings.gate_min_positives or positives == labels.size:
        return GateResult(
            False,
            [
                f"insufficient evidence on the new regime: {positives} labelled frauds in "
                f"{accounts} accounts on {where}, gate_min_positives is "
                f"{settings.gate_min_positives} accounts"
            ],
            metrics,
        )
    overall = _paired(
        labels, evidence.candidate, evidence.champion, settings, groups=evidence.groups
    )
    candidate_pr = average_precision(labels, evidence.candidate) or 0.0
    champion_pr = average_precision(labels, evidence.champion) or 0.0
    difference = overall.value if overall.value is not None else candidate_pr - champion_pr
    metrics.update(
        {
            "regime.candidate_pr_auc": candidate_pr,
            "regime.champion_pr_auc": champion_pr,
            "regime.diff": difference,
        }
    )
    if overall.low is not None and overall.high is not None:
        metrics.update({"regime.diff_low": overall.low, "regime.diff_high": overall.high})
    worse, segment_metrics = _worse_segments(evidence, settings)
    metrics.update(segment_metrics)
    head = (
        f"on {where}, {positives} frauds in {accounts} accounts: candidate PR-AUC "
        f"{candidate_pr:.3f} vs champion {champion_pr:.3f} "
        f"({difference:+.3f}{_span(overall)} at {settings.drift_confidence:.0%})"
    )
    reasons = []
    if difference <= settings.retrain_min_improvement:
        reasons.append(f"{head}: not better (needed > {settings.retrain_min_improvement:+.3f})")
    if worse:
        reasons.append(f"significantly worse on segments: {'; '.join(worse)}")
    if reasons:
        return GateResult(False, reasons, metrics)
    return GateResult(
        True,
        [f"{head}: better, and not significantly worse on {len(segment_metrics)} judged segments"],
        metrics,
    )
