"""Canary analysis: is the canary at least as good as the champion on live traffic?

The scoring service routes a deterministic share of users to the ``canary`` version and
logs every row with the variant, the version that answered, the model's own latency
and, for a canary that failed, its error (the champion answers those rows, so a broken
canary costs no request). :func:`analyse_canary` compares the rows the canary was
routed to with the champion's rows of the same days:

* **traffic** -- at least ``canary_min_requests`` rows routed to the canary, else the
  verdict is ``wait``;
* **errors** -- the share of routed rows the canary failed on, at most
  ``canary_max_error_rate``;
* **latency** -- the canary's p99 model latency, at most ``canary_max_latency_ratio``
  times the champion's, unless within ``canary_latency_slack_ms`` of it (sub-millisecond
  noise must not fail a canary);
* **score shift** -- PSI of the canary's scores against the champion's. A model
  retrained after drift may score very differently from the champion (PSI of several
  units is normal then), so the live PSI is judged against what offline evaluation
  measured between the two on the same holdout (version tag
  ``candidate.score_psi_vs_champion``): it may differ from it by at most
  ``canary_max_score_psi``; without that expectation the PSI itself is capped by it.
  This catches a canary that behaves live unlike it did offline (broken artifact,
  serving skew, a model that scores everyone high or low);
* **labels** -- where both variants have ``canary_min_positives`` accounts with a reported
  fraud (:func:`~driftline.monitoring.canary_labels.enough_frauds`), the
  canary's PR-AUC may fall short of the champion's by ``canary_label_tolerance`` at most;
  otherwise noted and not judged.

The verdict is ``promote`` when every judged check passes, else ``rollback``, with one
reason per check and the numbers as :meth:`CanaryReport.metrics`.

**Shadow evidence.** A version under the ``shadow`` alias is scored by the service on a
copy of the traffic, never answering (the shadow log, ``predictions/shadow/``).
:func:`analyse_shadow` compares its scores with what was served *on the same
transactions* (score PSI, mean absolute difference, decision agreement, errors,
latency, PR-AUC on reported frauds); ``driftline models`` prints it per shadow version.
A canary that was shadowed first carries that report (``CanaryReport.shadow``), and
when no offline PSI is known, the shadow's live PSI against the champion is the
expected score shift.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import date
from typing import Any, Literal

import numpy as np
import pandas as pd

from driftline.core.settings import Settings
from driftline.core.stats import psi
from driftline.data.predictions import logged_days, read_predictions
from driftline.monitoring.canary_labels import label_block, labels_judged

Verdict = Literal["promote", "rollback", "wait"]


@dataclass(frozen=True)
class CanaryReport:
    """The canary's live evidence against the champion, and the verdict.

    Attributes:
        canary_version: The version under ``canary``.
        champion_version: The champion it is compared with.
        days: Transaction days the evidence covers (ISO dates).
        routed: Rows routed to the canary (answered by it or failed by it).
        errors: Routed rows the canary failed on.
        champion_rows: Rows the champion answered by its own routing.
        error_rate: ``errors / routed`` (0 with no traffic).
        canary_p99_ms: p99 of the canary's model latency (None without answers).
        champion_p99_ms: p99 of the champion's model latency.
        score_psi: PSI of canary against champion scores (None without both).
        expected_psi: The same PSI measured offline on the candidate's holdout, if known.
        canary_decline_rate: Share of canary answers that declined.
        champion_decline_rate: Share of champion answers that declined.
        labels: Per variant ``rows``, ``positives``, ``pr_auc`` where judged.
        verdict: ``promote``, ``rollback`` or ``wait`` (not enough traffic yet).
        reasons: One line per check.
        shadow: The canary version's :class:`ShadowReport` (as a dict) when it was
            scored in shadow on the same days, else None.
    """

    canary_version: str
    champion_version: str
    days: list[str]
    routed: int
    errors: int
    champion_rows: int
    error_rate: float
    canary_p99_ms: float | None
    champion_p99_ms: float | None
    score_psi: float | None
    expected_psi: float | None
    canary_decline_rate: float | None
    champion_decline_rate: float | None
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    verdict: Verdict = "wait"
    reasons: list[str] = field(default_factory=list)
    shadow: dict[str, Any] | None = None

    @property
    def reason(self) -> str:
        """The reasons as one sentence (for tags and logs)."""
        return "; ".join(self.reasons)

    def metrics(self) -> dict[str, float]:
        """The numbers the verdict rests on (for decision tags)."""
        numbers: dict[str, float | None] = {
            "routed": float(self.routed),
            "errors": float(self.errors),
            "error_rate": self.error_rate,
            "champion_rows": float(self.champion_rows),
            "canary_p99_ms": self.canary_p99_ms,
            "champion_p99_ms": self.champion_p99_ms,
            "score_psi": self.score_psi,
            "expected_psi": self.expected_psi,
        }
        for variant, block in self.labels.items():
            numbers[f"{variant}_pr_auc"] = block.get("pr_auc")
        return {key: value for key, value in numbers.items() if value is not None}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    return (
        frame[name] if name in frame.columns else pd.Series([None] * len(frame), index=frame.index)
    )


def _p99(values: pd.Series) -> float | None:
    numbers = pd.to_numeric(values, errors="coerce").dropna().to_numpy()
    return float(np.percentile(numbers, 99)) if numbers.size else None


def _decline_rate(rows: pd.DataFrame) -> float | None:
    return float((rows["decision"] == "decline").mean()) if len(rows) else None


def _label_block(rows: pd.DataFrame, frauds: set[str]) -> dict[str, Any]:
    """Rows, positives, fraud accounts and PR-AUC of ``rows`` (see ``label_block``)."""
    return label_block(rows, frauds)[2]


@dataclass(frozen=True)
class _Split:
    """The served rows split by who answered them."""

    canary: pd.DataFrame
    failed: pd.DataFrame
    champion: pd.DataFrame


def _split(served: pd.DataFrame, canary: str, champion: str) -> _Split:
    if served.empty:
        empty = pd.DataFrame(columns=["transaction_id", "score", "decision"])
        return _Split(empty, empty, empty)
    version = served["model_version"].astype(str)
    failed_version = _column(served, "canary_failed_version").astype(str)
    failed = served[failed_version == canary]
    answered = served[(served["variant"] == "canary") & (version == canary)]
    own = served[(served["variant"] == "champion") & (version == champion)]
    own = own[~own.index.isin(failed.index)]
    return _Split(answered, failed, own)


def _latency_check(report: dict[str, Any], settings: Settings) -> tuple[bool, str]:
    canary, champion = report["canary_p99_ms"], report["champion_p99_ms"]
    if canary is None or champion is None:
        return True, "latency: not judged (no answers from one variant)"
    limit = max(
        champion * settings.canary_max_latency_ratio, champion + settings.canary_latency_slack_ms
    )
    ok = canary <= limit
    return (
        ok,
        f"p99 model latency {canary:.2f} ms vs champion {champion:.2f} ms (limit {limit:.2f})",
    )


def _shift_check(
    score_psi: float | None, expected: float | None, settings: Settings
) -> tuple[bool, str]:
    if score_psi is None:
        return True, "score shift: not judged (no canary answers)"
    limit = settings.canary_max_score_psi
    if expected is None:
        return score_psi <= limit, f"score PSI vs champion {score_psi:.3f} (max {limit})"
    ok = abs(score_psi - expected) <= limit
    return ok, (
        f"score PSI vs champion {score_psi:.3f}, offline {expected:.3f} (may differ by {limit})"
    )


def _label_check(labels: dict[str, dict[str, Any]], settings: Settings) -> tuple[bool, str]:
    canary, champion = labels.get("canary", {}), labels.get("champion", {})
    if not labels_judged(labels, settings):
        return True, (
            f"labels: not judged (accounts with a reported fraud: "
            f"{canary.get('fraud_accounts', 0)} canary / {champion.get('fraud_accounts', 0)} "
            f"champion, {settings.canary_min_positives} needed each)"
        )
    ok = canary["pr_auc"] >= champion["pr_auc"] - settings.canary_label_tolerance
    return ok, f"PR-AUC {canary['pr_auc']:.3f} vs champion {champion['pr_auc']:.3f}"


def analyse_canary(
    served: pd.DataFrame,
    *,
    canary_version: str,
    champion_version: str,
    settings: Settings,
    frauds: set[str] | None = None,
    expected_psi: float | None = None,
    shadow: pd.DataFrame | None = None,
) -> CanaryReport:
    """Judge the canary on the served rows of the days since it started.

    Args:
        served: Prediction-log rows (``driftline.monitoring.served.read_served``).
        canary_version: Version under ``canary``.
        champion_version: Version under ``champion``.
        settings: The ``canary_*`` thresholds.
        frauds: Transaction ids with a reported chargeback (None: no label check).
        expected_psi: PSI between the two versions' scores measured offline on the same
            holdout (None: the shadow's live PSI if known, else judge the live PSI alone).
        shadow: Shadow-log rows of those days (:func:`read_shadow`); the canary
            version's rows among them become the report's ``shadow``.

    Returns:
        The report; ``verdict`` is ``wait`` until ``canary_min_requests`` rows were
        routed to the canary.
    """
    split = _split(served, str(canary_version), str(champion_version))
    routed, errors = len(split.canary) + len(split.failed), len(split.failed)
    numbers: dict[str, Any] = {
        "canary_p99_ms": _p99(_column(split.canary, "model_latency_ms")),
        "champion_p99_ms": _p99(_column(split.champion, "model_latency_ms")),
    }
    score_psi = None
    if len(split.canary) and len(split.champion):
        score_psi = psi(
            split.champion["score"].to_numpy(dtype=np.float64),
            split.canary["score"].to_numpy(dtype=np.float64),
        )
    labels: dict[str, dict[str, Any]] = {}
    if frauds is not None:
        labels = {
            "canary": _label_block(split.canary, frauds),
            "champion": _label_block(split.champion, frauds),
        }
    days = sorted({str(ts.date()) for ts in served["ts"]}) if len(served) else []
    error_rate = errors / routed if routed else 0.0
    shadowed = None
    if shadow is not None and len(shadow):
        mine = shadow[shadow["shadow_version"].astype(str) == str(canary_version)]
        if len(mine):
            shadowed = analyse_shadow(mine, shadow_version=str(canary_version), frauds=frauds)
            if expected_psi is None:
                expected_psi = shadowed.score_psi
    numbers["expected_psi"] = expected_psi
    verdict, reasons = _verdict(routed, error_rate, score_psi, numbers, labels, settings)
    return CanaryReport(
        canary_version=str(canary_version),
        champion_version=str(champion_version),
        days=days,
        routed=routed,
        errors=errors,
        champion_rows=len(split.champion),
        error_rate=error_rate,
        canary_p99_ms=numbers["canary_p99_ms"],
        champion_p99_ms=numbers["champion_p99_ms"],
        score_psi=score_psi,
        expected_psi=expected_psi,
        canary_decline_rate=_decline_rate(split.canary),
        champion_decline_rate=_decline_rate(split.champion),
        labels=labels,
        verdict=verdict,
        reasons=reasons,
        shadow=None if shadowed is None else shadowed.to_dict(),
    )


def _verdict(
    routed: int,
    error_rate: float,
    score_psi: float | None,
    numbers: dict[str, Any],
    labels: dict[str, dict[str, Any]],
    settings: Settings,
) -> tuple[Verdict, list[str]]:
    """Apply the checks in order; every check's line is kept, failing ones first."""
    if routed < settings.canary_min_requests:
        return "wait", [
            f"{routed} rows routed to the canary, {settings.canary_min_requests} needed"
        ]
    checks: list[tuple[bool, str]] = [
        (
            error_rate <= settings.canary_max_error_rate,
            f"error rate {error_rate:.4f} (max {settings.canary_max_error_rate})",
        ),
        _latency_check(numbers, settings),
        _shift_check(score_psi, numbers["expected_psi"], settings),
        _label_check(labels, settings),
    ]
    failed = [f"FAILED {text}" for ok, text in checks if not ok]
    passed = [text for ok, text in checks if ok]
    return ("rollback" if failed else "promote"), failed + passed


@dataclass(frozen=True)
class ShadowReport:
    """A shadow version's scores against what was served on the same transactions.

    Only rows the champion answered are compared (fallback answers and canary rows
    are other models' scores).

    Attributes:
        shadow_version: The version scored in shadow.
        days: Transaction days covered (ISO dates).
        rows: Transactions the shadow was given.
        errors: Of them, those it failed on (no score).
        error_rate: ``errors / rows``.
        compared: Scored rows the champion answered (the comparison's rows).
        served_versions: Champion versions those rows were answered by, with counts.
        score_psi: PSI of the shadow's scores against the served ones (None if none).
        mean_abs_diff: Mean absolute score difference per transaction.
        decision_agreement: Share of compared rows where both decide alike.
        shadow_decline_rate: Share the shadow would decline.
        served_decline_rate: Share the champion declined.
        shadow_p99_ms: p99 of the shadow's forward-pass time (per merged pass).
        labels: ``shadow`` and ``served`` blocks (rows, positives, pr_auc) with frauds.
    """

    shadow_version: str
    days: list[str]
    rows: int
    errors: int
    error_rate: float
    compared: int
    served_versions: dict[str, int]
    score_psi: float | None
    mean_abs_diff: float | None
    decision_agreement: float | None
    shadow_decline_rate: float | None
    served_decline_rate: float | None
    shadow_p99_ms: float | None
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def analyse_shadow(
    shadow: pd.DataFrame, *, shadow_version: str, frauds: set[str] | None = None
) -> ShadowReport:
    """Compare one shadow version's logged scores with the served ones.

    Args:
        shadow: Shadow-log rows (:func:`read_shadow`); rows of other versions are ignored.
        shadow_version: The version to report on.
        frauds: Transaction ids with a reported chargeback (None: no label blocks).
    """
    rows = (
        shadow[shadow["shadow_version"].astype(str) == str(shadow_version)]
        if len(shadow)
        else shadow
    )
    scored = rows[rows["shadow_score"].notna()] if len(rows) else rows
    compared = scored[scored["answered_by"] == "champion"] if len(scored) else scored
    errors = len(rows) - len(scored)
    mine = compared["shadow_score"].to_numpy(dtype=np.float64) if len(compared) else np.empty(0)
    served = compared["score"].to_numpy(dtype=np.float64) if len(compared) else np.empty(0)
    labels: dict[str, dict[str, Any]] = {}
    if frauds is not None and len(compared):
        labels = {
            "shadow": _label_block(compared.assign(score=compared["shadow_score"]), frauds),
            "served": _label_block(compared, frauds),
        }
    agree = None
    if len(compared):
        agree = float((compared["shadow_decision"] == compared["decision"]).mean())
    return ShadowReport(
        shadow_version=str(shadow_version),
        days=sorted({str(ts.date()) for ts in rows["ts"]}) if len(rows) else [],
        rows=len(rows),
        errors=errors,
        error_rate=errors / len(rows) if len(rows) else 0.0,
        compared=len(compared),
        served_versions=(
            {
                str(k): int(v)
                for k, v in compared["model_version"].astype(str).value_counts().items()
            }
            if len(compared)
            else {}
        ),
        score_psi=psi(served, mine) if mine.size else None,
        mean_abs_diff=float(np.mean(np.abs(mine - served))) if mine.size else None,
        decision_agreement=agree,
        shadow_decline_rate=(
            float((compared["shadow_decision"] == "decline").mean()) if len(compared) else None
        ),
        served_decline_rate=_decline_rate(compared),
        shadow_p99_ms=_p99(_column(rows, "shadow_latency_ms")) if len(rows) else None,
        labels=labels,
    )


def read_shadow(settings: Settings, days: list[date]) -> pd.DataFrame:
    """The shadow-log rows of ``days`` in one frame (empty if none)."""
    frames = [f for day in days if len(f := read_predictions(settings, day, shadow=True))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def shadow_days(settings: Settings) -> list[date]:
    """Transaction days with shadow-log rows, oldest first."""
    return logged_days(settings, shadow=True)
