"""Drift scenarios with an intensity: parsing ``NAME[:INTENSITY]@DAY`` and its effect."""

from __future__ import annotations

from datetime import date

import pandas as pd
import pytest
from typer.testing import CliRunner

from driftline.cli import app
from driftline.simulator import DriftScenario, SimulatorConfig, simulate_transactions

START = date(2026, 1, 8)
DAY = date(2026, 1, 9)


def _config(*scenarios: str, fraud_rate: float = 0.02) -> SimulatorConfig:
    return SimulatorConfig(
        seed=11,
        rows_per_day=2000,
        fraud_rate=fraud_rate,
        anchor=date(2026, 1, 1),
        scenarios=tuple(DriftScenario.parse(s) for s in scenarios),
    )


def _day(config: SimulatorConfig) -> pd.DataFrame:
    tx, truth = simulate_transactions(config, DAY)
    frame = tx.to_pandas()
    frame["fraud_type"] = truth.column("fraud_type").to_pylist()
    return frame


@pytest.mark.parametrize(
    ("text", "name", "intensity"),
    [
        ("covariate_shift@2026-01-08", "covariate_shift", 1.0),
        ("covariate_shift:0.3@2026-01-08", "covariate_shift", 0.3),
        (" new_fraud_pattern:2@2026-01-08 ", "new_fraud_pattern", 2.0),
    ],
)
def test_scenarios_parse_with_an_optional_intensity(text: str, name: str, intensity: float) -> None:
    scenario = DriftScenario.parse(text)

    assert (scenario.name, scenario.start, scenario.intensity) == (name, START, intensity)
    assert DriftScenario.parse(str(scenario)) == scenario


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("covariate_shift", "expected NAME"),
        ("covariate_shift:@2026-01-08", "expected NAME"),
        ("covariate_shift:strong@2026-01-08", "could not convert"),
        ("covariate_shift:5@2026-01-08", "must lie in"),
        ("covariate_shift:-0.1@2026-01-08", "must lie in"),
        ("heatwave@2026-01-08", "unknown drift scenario"),
        ("covariate_shift@2026-13-08", "month must be"),
    ],
)
def test_bad_scenarios_are_clear_errors(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DriftScenario.parse(text)


def test_the_cli_rejects_a_bad_scenario_naming_the_option() -> None:
    result = CliRunner().invoke(app, ["simulate", "--start", "2026-01-01", "--drift", "shift:x@1"])

    assert result.exit_code == 2
    assert "--drift" in result.output


def test_intensity_zero_is_no_drift_and_one_is_the_default() -> None:
    base = _day(_config())

    assert _day(_config("covariate_shift:0@2026-01-08")).equals(base)
    assert _day(_config("new_fraud_pattern:0@2026-01-08")).equals(base)
    assert _day(_config("covariate_shift:1@2026-01-08")).equals(
        _day(_config("covariate_shift@2026-01-08"))
    )


def test_a_mild_covariate_shift_moves_spending_less_than_a_strong_one() -> None:
    base = _day(_config())
    mild = _day(_config("covariate_shift:0.3@2026-01-08"))
    full = _day(_config("covariate_shift@2026-01-08"))

    amount = [frame["amount"].median() for frame in (base, mild, full)]
    online = [(frame["channel"] == "online").mean() for frame in (base, mild, full)]
    assert amount[0] < amount[1] < amount[2]
    assert 1.03 < amount[1] / amount[0] < 1.2 < amount[2] / amount[0]
    assert online[0] < online[1] < online[2]


def test_new_fraud_pattern_intensity_scales_the_bust_out_share() -> None:
    shares = []
    for level in ("0.5", "1", "2"):
        frame = _day(_config(f"new_fraud_pattern:{level}@2026-01-08", fraud_rate=0.25))
        fraud = frame[frame["fraud_type"] != ""]
        shares.append((fraud["fraud_type"] == "bust_out").mean())

    assert 0.0 < shares[0] < shares[1] < shares[2]
    assert 0.2 < shares[1] < 0.4 < 0.5 < shares[2]  # about 30% and 60% of the fraud
