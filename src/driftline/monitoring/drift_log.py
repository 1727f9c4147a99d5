"""The drift log: drift results per day and the retrain triggers, kept between
monitoring runs in the lake."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from typing import Any

from driftline.core.lake import write_json
from driftline.core.settings import Settings
from driftline.monitoring.files import list_files, monitoring_uri, read_json
from driftline.monitoring.policy import TriggerDecision
from driftline.monitoring.result import DriftResult

RESULTS = "results"
TRIGGERS = "triggers"


def _entry_name(day: str) -> str:
    return f"dt={day}.json"


def _entry_day(uri: str) -> str:
    return uri.rsplit("/", 1)[-1].removeprefix("dt=").removesuffix(".json")


@dataclass
class DriftLog:
    """Drift results per day and the retrain triggers, one small object per entry.

    Entries live under ``{lake}/monitoring/drift_log/`` (:func:`path_for`):
    ``results/dt=D.json`` holds day ``D``'s result and ``triggers/dt=D.json`` the
    decision that triggered a retrain on ``D``. Recording a day replaces that day's
    entry (reruns and backfills are idempotent). :meth:`save` writes only the entries
    recorded since :meth:`load`, each as a whole object, so two monitoring runs never
    undo each other's entries (there is no read-modify-write of a shared file); two
    runs of the *same* day write the same entry, and the later one wins.
    ``last_trigger_day`` is the newest trigger's day, so an older interval re-run can
    never move it back in time.
    """

    path: str
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    triggers: dict[str, dict[str, Any]] = field(default_factory=dict)
    _dirty: set[tuple[str, str]] = field(default_factory=set, init=False, repr=False, compare=False)

    @staticmethod
    def path_for(settings: Settings) -> str:
        """Where the log of ``settings`` lives (a folder URI in the lake)."""
        return monitoring_uri(settings, "drift_log")

    @classmethod
    def load(cls, settings: Settings) -> DriftLog:
        """Read every entry, or an empty log when none was written yet."""
        path = cls.path_for(settings)
        return cls(
            path,
            results=cls._read_entries(f"{path}/{RESULTS}"),
            triggers=cls._read_entries(f"{path}/{TRIGGERS}"),
        )

    @staticmethod
    def _read_entries(folder: str) -> dict[str, dict[str, Any]]:
        return {_entry_day(uri): dict(read_json(uri)) for uri in list_files(folder, ".json")}

    @property
    def last_trigger_day(self) -> date | None:
        """The newest day on which a retrain was triggered, if any."""
        return date.fromisoformat(max(self.triggers)) if self.triggers else None

    def record(self, result: DriftResult) -> None:
        """Store ``result`` as its day's entry, replacing any earlier one."""
        self.results[result.day] = result.to_dict()
        self._dirty.add((RESULTS, result.day))

    def record_trigger(self, day: date, decision: TriggerDecision) -> None:
        """Remember that ``decision`` triggered a retrain on ``day``.

        Raises:
            ValueError: If ``decision`` did not trigger.
        """
        if not decision.trigger:
            raise ValueError("only a triggering decision can be recorded as a trigger")
        self.triggers[day.isoformat()] = decision.to_dict()
        self._dirty.add((TRIGGERS, day.isoformat()))

    def history(self, *, until: date | None = None) -> list[DriftResult]:
        """Stored results, oldest first, optionally only those starting on/before ``until``."""
        results = [DriftResult.from_dict(self.results[key]) for key in sorted(self.results)]
        return [r for r in results if until is None or r.start_day <= until]

    def to_dict(self) -> dict[str, Any]:
        """The whole log as one JSON-able dict (results, triggers, last trigger day)."""
        last = self.last_trigger_day
        return {
            "results": {key: self.results[key] for key in sorted(self.results)},
            "triggers": {key: self.triggers[key] for key in sorted(self.triggers)},
            "last_trigger_day": last.isoformat() if last else None,
        }

    def save(self) -> str:
        """Write the entries recorded since :meth:`load` (each atomically); return the
        log's folder URI."""
        for kind, day in sorted(self._dirty):
            entries = self.results if kind == RESULTS else self.triggers
            write_json(f"{self.path}/{kind}/{_entry_name(day)}", entries[day])
        self._dirty.clear()
        return self.path
