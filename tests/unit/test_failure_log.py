"""A model failing on every request logs a traceback once, then a line per period."""

from __future__ import annotations

import logging

import pytest

from driftline.serving.scoring import FailureLog


def _fail(failures: FailureLog) -> None:
    try:
        raise RuntimeError("corrupt weights")
    except RuntimeError:
        failures.report("champion", "7", "fallback chain answers")


def test_the_first_failure_has_a_traceback_and_repeats_are_throttled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    throttled, every_time = FailureLog(every_seconds=3600.0), FailureLog(every_seconds=0.0)
    with caplog.at_level(logging.ERROR, logger="driftline.serving.scoring"):
        for _ in range(50):
            _fail(throttled)
    assert len(caplog.records) == 1 and caplog.records[0].exc_info is not None
    assert "champion version 7 failed; fallback chain answers" in caplog.text

    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="driftline.serving.scoring"):
        for _ in range(3):
            _fail(every_time)
    assert [r.exc_info is not None for r in caplog.records] == [True, False, False]
    assert "failed again (1 more since the last line)" in caplog.records[1].getMessage()
