"""The expected failures of the data plane: each names its cause and what to run next.

They are conditions of the data (a file missing, a batch rejected, a day held by another
run), not bugs: the CLI prints them without a traceback and exits non-zero, and the
Airflow tasks fail without retry where retrying cannot help.
"""

from __future__ import annotations


class DataError(Exception):
    """An expected condition of the data plane; the message says what and what next."""


class LandingFileError(DataError):
    """A landing or staged file is missing, empty or unreadable."""


class BatchQuarantined(DataError):  # noqa: N818 (reads as an event: "batch quarantined")
    """A batch failed its gate and was moved to quarantine (the message says why)."""

    def __init__(self, message: str, quarantine_uri: str) -> None:
        super().__init__(message)
        self.quarantine_uri = quarantine_uri


class DayLocked(DataError):  # noqa: N818 (reads as a state: "day locked")
    """Another run holds the lock of this dataset and day."""
