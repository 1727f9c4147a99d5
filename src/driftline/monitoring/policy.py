"""When drift triggers a retrain: the trigger policy (:func:`decide`, pure) and its
answer (:class:`TriggerDecision`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from driftline.core.interval import Interval
from driftline.core.settings import Settings
from driftline.monitoring.result import DriftResult


@dataclass(frozen=True)
class TriggerDecision:
    """Whether drift should trigger a retrain now, and why.

    Attributes:
        trigger: Start a retrain.
        reason: One sentence for logs, tags and the Airflow UI.
        window_start: First day of the current drift streak (set whenever today drifted,
            even when debounce or cool-down hold the trigger back).
        window_end: Day after today's interval (exclusive), with ``window_start``.
    """

    trigger: bool
    reason: str
    window_start: date | None = None
    window_end: date | None = None

    @property
    def window(self) -> Interval | None:
        """The drift window as an :class:`Interval`, when there is one."""
        if self.window_start is None or self.window_end is None:
            return None
        return Interval.parse(self.window_start, self.window_end)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO strings)."""
        return {
            "trigger": self.trigger,
            "reason": self.reason,
            "window_start": self.window_start.isoformat() if self.window_start else None,
            "window_end": self.window_end.isoformat() if self.window_end else None,
        }


def _as_result(item: DriftResult | Mapping[str, Any]) -> DriftResult:
    return item if isinstance(item, DriftResult) else DriftResult.from_dict(item)


def _latest_by_day(history: Iterable[DriftResult | Mapping[str, Any]]) -> dict[date, DriftResult]:
    """One result per day; a later entry for the same day replaces an earlier one."""
    by_day: dict[date, DriftResult] = {}
    for item in history:
        result = _as_result(item)
        by_day[result.start_day] = result
    return by_day


def evidence_days(result: DriftResult) -> frozenset[date]:
    """The transaction days ``result`` judged drifted.

    The interval's own day for data or prediction drift; for performance drift alone,
    every matured day of its performance window (labels lag the interval).
    """
    check = result.performance_check
    if result.dataset_drift or result.prediction_drift or not check:
        return frozenset({result.start_day})
    first = date.fromisoformat(str(check.get("first_day", check["last_day"])))
    last = date.fromisoformat(str(check["last_day"]))
    return frozenset(first + timedelta(days=n) for n in range((last - first).days + 1))


def independent_evidence(streak: Sequence[DriftResult]) -> list[DriftResult]:
    """The results of ``streak`` (newest first) that count as independent evidence.

    Newest first, a result counts only when none of its :func:`evidence_days` was
    already judged by a counted result: two monitoring days whose performance windows
    share a matured day are one piece of evidence, not two.
    """
    seen: set[date] = set()
    counted = []
    for result in streak:
        days = evidence_days(result)
        if days & seen:
            continue
        seen |= days
        counted.append(result)
    return counted


@dataclass(frozen=True)
class _Streak:
    """The drift streak that the decisive results end with (see :func:`current_streak`).

    Attributes:
        drifted: The streak's drifted results, newest first (never empty when confirmed).
        confirmed: Whether the streak reached the debounce (``needed`` results with
            independent evidence, :func:`independent_evidence`).
        clean: Results without drift since the newest drifted one (only while confirmed).
    """

    drifted: list[DriftResult]
    confirmed: bool
    clean: int


def current_streak(decisive: Iterable[DriftResult], needed: int) -> _Streak:
    """The drift streak that ``decisive`` (oldest first, enough data each) ends with.

    An unconfirmed streak ends at the first result without drift. A confirmed one
    (debounced) is held through results without drift and ends only on ``needed`` of
    them in a row -- as much evidence as confirmed it: a confirmed drift still waiting
    for labels (or the cool-down) is not forgotten because one later day's evidence was
    not significant on its own (a new fraud pattern's days vary).
    """
    drifted: list[DriftResult] = []
    confirmed, clean = False, 0
    for result in decisive:
        if result.drifted:
            drifted.insert(0, result)
            clean = 0
            confirmed = confirmed or len(independent_evidence(drifted)) >= needed
        elif confirmed and clean + 1 < needed:
            clean += 1
        else:
            drifted, confirmed, clean = [], False, 0
    return _Streak(drifted, confirmed, clean)


def _describe(result: DriftResult) -> str:
    parts = []
    if result.dataset_drift:
        parts.append(f"{len(result.drifted_columns)} drifted inputs {result.drifted_columns}")
    if result.prediction_drift:
        parts.append(f"score PSI {result.prediction_drift_score:.3f}")
    if result.performance_drift and result.performance_check:
        check = result.performance_check
        dropped = []
        if "pr_auc" in check.get("degraded_on", ["pr_auc"]):
            dropped.append(
                f"served PR-AUC {check['pr_auc']:.3f} significantly below {check['floor']:.3f}"
            )
        if "roc_auc" in check.get("degraded_on", []):
            dropped.append(
                f"served ROC-AUC {check['roc_auc']:.3f} significantly below "
                f"{check['roc_floor']:.3f}"
            )
        parts.append(f"{' and '.join(dropped)} on {check['first_day']}..{check['last_day']}")
    return " and ".join(parts)


def train_split_end(window_end: date, settings: Settings) -> date:
    """First day *not* in the train split of a training set whose label cut-off is
    ``window_end`` (the valid and holdout days and the unlabelled tail follow it)."""
    tail = settings.label_maturity_days + settings.holdout_days + settings.valid_days
    return window_end - timedelta(days=tail)


def _label_wait(window_start: date, window_end: date, settings: Settings) -> str | None:
    """Why a retrain must still wait for labels of the drift, or None when it need not."""
    needed = settings.retrain_min_drift_days
    have = (train_split_end(window_end, settings) - window_start).days
    if needed == 0 or have >= needed:
        return None
    ready = (
        window_start + timedelta(days=needed) + (window_end - train_split_end(window_end, settings))
    )
    return (
        f"waiting for labels: a retrain now would train on {max(have, 0)} labelled day(s) "
        f"of the drift (since {window_start}), retrain_min_drift_days is {needed}; "
        f"possible from the interval of {ready - timedelta(days=1)} on"
    )


def decide(
    history: Sequence[DriftResult | Mapping[str, Any]],
    *,
    last_trigger_day: date | None,
    today: Interval,
    settings: Settings,
) -> TriggerDecision:
    """Decide whether drift seen up to ``today`` should trigger a retrain (pure, no I/O).

    Drift alone is noisy: one odd day (a holiday, a marketing campaign, a small sample)
    must not start a retrain, and a drift that persists must start exactly one, not one
    per day while the retrain and promotion are still running. Three rules ensure that:

    * **Evidence of today.** Only an interval with a result of enough data decides. A day
      with no result or with insufficient data never triggers -- but it does not break a
      streak either: it is skipped, as is a day missing from the history.
    * **Debounce.** A drift is confirmed when ``drift_debounce_days`` consecutive results
      with enough data have drifted, each on evidence of its own: results whose judged
      days overlap (two performance windows sharing a matured day) count once
      (:func:`independent_evidence`).
    * **Hold.** A confirmed drift that is still held back (labels, cool-down) is kept
      through results without drift, and ends only on ``drift_debounce_days`` of them
      in a row (:func:`current_streak`); a day without drift can then trigger the held
      retrain once its wait ends. An unconfirmed streak ends at the first day without
      drift.
    * **Drift start.** The streak's first drifted day itself (its oldest result's
      :attr:`~driftline.monitoring.result.DriftResult.evidence_day`), never an earlier
      window a later result judged.
    * **Labels.** A retrain only helps once the training split holds labelled days of
      the drift: the trigger waits until at least ``retrain_min_drift_days`` days since
      the streak's first evidence fall before :func:`train_split_end` of today's end.
      The streak and its window are kept meanwhile; the wait ends by itself.
    * **Cool-down.** No trigger within ``drift_cooldown_days`` after ``last_trigger_day``
      (nor before it, when an older interval is re-run), and results up to the last trigger
      day are not counted again: after the cool-down a new trigger needs a new streak of
      drift observed after the last trigger.

    Args:
        history: Results of past intervals and today's (any order; for a day listed twice
            the later entry wins). Results after ``today`` are ignored.
        last_trigger_day: Day the last retrain was triggered, None if never.
        today: The interval being decided.
        settings: ``drift_debounce_days`` and ``drift_cooldown_days``.

    Returns:
        The decision; ``window_start`` is the first drifted day of the streak (after the
        last trigger) and ``window_end`` the end of ``today``.
    """
    day = today.start.date()
    by_day = _latest_by_day(history)
    result = by_day.get(day)
    if result is None:
        return TriggerDecision(False, f"no drift result for {day}: no decision")
    if not result.sufficient:
        return TriggerDecision(False, f"{day}: insufficient data ({result.rows} rows), no decision")
    if last_trigger_day is not None and day <= last_trigger_day:
        return TriggerDecision(
            False,
            f"{day}: {_today(result)} but a retrain was already triggered on {last_trigger_day}",
        )
    decisive = [
        r
        for d, r in sorted(by_day.items())
        if d <= day and r.sufficient and (last_trigger_day is None or d > last_trigger_day)
    ]
    needed = settings.drift_debounce_days
    streak = current_streak(decisive, needed)
    if not (result.drifted or streak.confirmed):
        return TriggerDecision(False, f"{day}: {_today(result)}")
    # The drift starts on the first drifted day itself: the streak's oldest result.
    # A later result judging older matured days does not move it back.
    window_start = streak.drifted[-1].evidence_day
    independent = independent_evidence(streak.drifted)
    window_end = today.end.date()
    held = (
        f"; the drift confirmed since {window_start} is held ({streak.clean} interval(s) "
        f"without drift since, {needed} in a row end it)"
        if streak.clean
        else ""
    )
    if last_trigger_day is not None:
        next_allowed = last_trigger_day + timedelta(days=settings.drift_cooldown_days)
        if day < next_allowed:
            return TriggerDecision(
                False,
                f"{day}: {_today(result)}{held} but a retrain was triggered on "
                f"{last_trigger_day}; cool-down of {settings.drift_cooldown_days} days, "
                f"next trigger possible on {next_allowed}",
                window_start,
                window_end,
            )
    if not streak.confirmed:
        shared = len(streak.drifted) - len(independent)
        return TriggerDecision(
            False,
            f"{day}: drift ({_describe(result)}) on {len(independent)} of {needed} "
            "consecutive intervals with independent evidence needed (debounce"
            + (f"; {shared} share evidence days with a newer one" if shared else "")
            + ")",
            window_start,
            window_end,
        )
    waiting = _label_wait(window_start, window_end, settings)
    if waiting is not None:
        return TriggerDecision(
            False,
            f"{day}: {_today(result)}{held}; confirmed on {len(streak.drifted)} intervals; "
            f"{waiting}",
            window_start,
            window_end,
        )
    return TriggerDecision(
        True,
        f"drift on {len(streak.drifted)} intervals ({len(independent)} independent) "
        f"since {window_start} (today: {_today(result)}{held})",
        window_start,
        window_end,
    )


def _today(result: DriftResult) -> str:
    """What today's result says, for a decision's reason."""
    if result.drifted:
        return f"drift ({_describe(result)})"
    return f"no drift (drift share {result.drift_share:.2f})"
