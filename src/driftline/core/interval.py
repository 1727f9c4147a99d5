"""Data intervals: the explicit time argument of every stage.

A run never asks the wall clock which data to process; it receives an
:class:`Interval` (half-open ``[start, end)``, UTC) and works on the day partitions
it covers.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta


def to_utc(value: datetime | date | str) -> datetime:
    """Parse ``value`` into an aware UTC datetime (naive values are taken as UTC)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@dataclass(frozen=True, order=True)
class Interval:
    """A half-open UTC time interval ``[start, end)`` aligned to whole days."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", to_utc(self.start))
        object.__setattr__(self, "end", to_utc(self.end))
        if self.end <= self.start:
            raise ValueError(f"interval end {self.end} must be after start {self.start}")
        for edge in (self.start, self.end):
            if edge != datetime(edge.year, edge.month, edge.day, tzinfo=UTC):
                raise ValueError(f"interval edges must be midnight UTC, got {edge.isoformat()}")

    @classmethod
    def for_day(cls, day: date | str) -> Interval:
        """The one-day interval starting at ``day``."""
        start = to_utc(day if isinstance(day, date) else date.fromisoformat(day))
        return cls(start, start + timedelta(days=1))

    @classmethod
    def parse(
        cls, start: str | date | datetime, end: str | date | datetime | None = None
    ) -> Interval:
        """Build an interval from ISO strings; ``end`` defaults to one day after ``start``."""
        begin = to_utc(start)
        return cls(begin, to_utc(end) if end is not None else begin + timedelta(days=1))

    def days(self) -> Iterator[date]:
        """Each calendar day the interval covers, oldest first."""
        day = self.start.date()
        while to_utc(day) < self.end:
            yield day
            day += timedelta(days=1)

    def widen(self, lookback: timedelta) -> Interval:
        """The interval extended ``lookback`` into the past (for windowed features)."""
        return Interval(self.start - lookback, self.end)

    def __str__(self) -> str:
        return f"[{self.start.date().isoformat()}, {self.end.date().isoformat()})"
