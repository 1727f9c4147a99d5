"""A loop with no drift at all asks for no retrain and promotes nothing.

The same loop as ``make demo`` (``scripts/demo_loop.py --no-drift``) at the smallest
scale that still judges each served day on data, prediction and matured labels: 14 days
of history that fill the look-back, a first model trained on the 10 days after them
(five train days, one valid, one holdout, three days for labels to mature: its drift
reference, the 7 newest labelled days, covers a whole week, as the weekly rhythm of
spending needs; with 4 days, a Monday drifted from a Thursday-to-Sunday reference),
then 5 served days. The trigger is left as eager as it can be (no wait for labelled drift
days, ``DRIFTLINE_RETRAIN_MIN_DRIFT_DAYS=0``), so two drifted days in a row would
request a retrain: only the monitor's verdicts keep it from firing.
"""

from __future__ import annotations

from datetime import date

import pytest

from driftline.lifecycle import registry
from tests.dags.conftest import airflow_template
from tests.e2e.loops import LoopRun, events, loop_fixture

__all__ = ["airflow_template"]  # the session fixture, shared with the other loop test

#: Seconds the loop may run: 15 min beside the closed loop on 2 cores were not enough.
LOOP_TIMEOUT_S = 2100
pytestmark = [pytest.mark.slow, pytest.mark.timeout(LOOP_TIMEOUT_S + 60)]

SERVE_FROM = date(2026, 1, 11)
END = date(2026, 1, 16)
LOOP = [
    "--serve-from", SERVE_FROM.isoformat(),
    "--end", END.isoformat(), "--no-drift", "--rows", "3000", "--fraud-rate", "0.02",
    "--trials", "1", "--workers", "1",
]  # fmt: skip
#: The first model is judged against its own reference whatever its quality, so its gate
#: floor is off: two days of training data are not the point here.
LOOP_ENV = {
    "DRIFTLINE_GATE_MIN_PR_AUC": "0",
    "DRIFTLINE_RETRAIN_MIN_DRIFT_DAYS": "0",
    "DRIFTLINE_MAX_EPOCHS": "4",
}


loop = loop_fixture("no-drift", LOOP, LOOP_ENV, timeout_s=LOOP_TIMEOUT_S)


def test_no_drift_requests_no_retrain_and_promotes_no_new_version(
    loop: LoopRun,
) -> None:
    cfg, timeline = loop
    flagged = [e["day"] for e in events(timeline, "drift detected")]

    assert timeline["drift"] == []
    assert events(timeline, "retrain requested") == [], f"drift flagged on {flagged}"
    assert [e["version"] for e in events(timeline, "promoted to champion")] == ["1"]
    client = registry.client(cfg)
    model = client.get_registered_model(cfg.model_name)
    assert {k: str(v) for k, v in model.aliases.items()} == {"champion": "1", "staging": "1"}
    versions = client.search_model_versions(f"name = '{cfg.model_name}'")
    assert [str(v.version) for v in versions] == ["1"]


def test_every_served_day_was_judged_and_labels_were_checked(
    loop: LoopRun,
) -> None:
    _, timeline = loop
    days = timeline["days"]
    monitored = {day: info["monitor"] for day, info in days.items()}

    assert sorted(monitored) == [f"2026-01-{d:02d}" for d in range(SERVE_FROM.day, END.day)]
    for day, result in monitored.items():
        assert result["state"] == "success", day
        decision = str(result["decision"])
        assert not decision.endswith("no decision"), decision  # no result or too few rows
        assert "nothing to monitor" not in decision, decision
        assert days[day]["served"]["failed"] == {}
    # Matured labels were judged: a served PR-AUC computed on labelled frauds (its verdict
    # may be "insufficient_evidence": below the floor but not significant is no drop).
    checks = [result["performance"] or {} for result in monitored.values()]
    judged = [c for c in checks if c.get("pr_auc") is not None and c.get("positives", 0) > 0]
    assert judged, [c.get("note") for c in checks]
