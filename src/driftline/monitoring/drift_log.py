"""The drift log: drift results per day and the last retrain trigger, kept between
monitoring runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from driftline.core.settings import Settings
from driftline.monitoring.files import write_json
from driftline.monitoring.policy import TriggerDecision
from driftline.monitoring.result import DriftResult


@dataclass
class DriftLog:
    """Drift results per day and the last retrain trigger, kept in one JSON file.

    The file is ``{settings.home}/monitoring/drift_log.json``. Recording a day replaces
    that day's entry (reruns and backfills are idempotent), and recording a trigger never
    moves ``last_trigger_day`` back in time (an older interval re-run cannot erase a newer
    trigger). Writes are atomic; concurrent writers are not coordinated (one monitoring
    run at a time, as the DAG schedules it).
    """

    path: Path
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    triggers: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_trigger_day: date | None = None

    @staticmethod
    def path_for(settings: Settings) -> Path:
        """Where the log of ``settings`` lives."""
        return settings.home / "monitoring" / "drift_log.json"

    @classmethod
    def load(cls, settings: Settings) -> DriftLog:
        """Read the log, or an empty one when none was written yet."""
        path = cls.path_for(settings)
        if not path.exists():
            return cls(path)
        data = json.loads(path.read_text(encoding="utf-8"))
        last = data.get("last_trigger_day")
        return cls(
            path,
            results=dict(data.get("results", {})),
            triggers=dict(data.get("triggers", {})),
            last_trigger_day=date.fromisoformat(last) if last else None,
        )

    def record(self, result: DriftResult) -> None:
        """Store ``result`` as its day's entry, replacing any earlier one."""
        self.results[result.day] = result.to_dict()

    def record_trigger(self, day: date, decision: TriggerDecision) -> None:
        """Remember that ``decision`` triggered a retrain on ``day``.

        Raises:
            ValueError: If ``decision`` did not trigger.
        """
        if not decision.trigger:
            raise ValueError("only a triggering decision can be recorded as a trigger")
        self.triggers[day.isoformat()] = decision.to_dict()
        if self.last_trigger_day is None or day > self.last_trigger_day:
            self.last_trigger_day = day

    def history(self, *, until: date | None = None) -> list[DriftResult]:
        """Stored results, oldest first, optionally only those starting on/before ``until``."""
        results = [DriftResult.from_dict(self.results[key]) for key in sorted(self.results)]
        return [r for r in results if until is None or r.start_day <= until]

    def to_dict(self) -> dict[str, Any]:
        """The file's JSON content."""
        return {
            "results": {key: self.results[key] for key in sorted(self.results)},
            "triggers": {key: self.triggers[key] for key in sorted(self.triggers)},
            "last_trigger_day": self.last_trigger_day.isoformat()
            if self.last_trigger_day
            else None,
        }

    def save(self) -> Path:
        """Write the log atomically; return its path."""
        write_json(self.path, self.to_dict())
        return self.path
