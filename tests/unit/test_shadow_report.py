"""Shadow evidence on hand-made shadow-log rows: the comparison and its use by the canary."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from driftline.core.settings import Settings
from driftline.monitoring.canary import analyse_canary, analyse_shadow
from tests.unit.test_canary import _rows

SETTINGS = Settings(canary_min_requests=300, canary_max_score_psi=0.5)


def _shadow(served: np.ndarray, shadowed: np.ndarray, *, version: str = "2") -> pd.DataFrame:
    """Shadow-log rows: the champion served ``served``, the shadow scored ``shadowed``."""
    n = len(served)
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "ts": datetime(2026, 1, 28, 12, tzinfo=UTC),
            "shadow_version": version,
            "shadow_score": shadowed,
            "shadow_decision": np.where(shadowed >= 0.5, "decline", "approve"),
            "shadow_latency_ms": 1.5,
            "shadow_error": None,
            "model_version": "1",
            "answered_by": "champion",
            "score": served,
            "decision": np.where(served >= 0.5, "decline", "approve"),
        }
    )


def test_a_shadow_is_compared_with_the_served_scores_of_the_same_transactions() -> None:
    rng = np.random.default_rng(0)
    served = rng.beta(1, 10, 1000)
    shadowed = np.clip(served + 0.05, 0, 1)
    rows = _shadow(served, shadowed)
    rows.loc[:9, "shadow_score"] = np.nan  # ten rows it failed on
    rows.loc[:9, "shadow_error"] = "RuntimeError: boom"
    rows.loc[10:19, "answered_by"] = "rules"  # fallback answers are not the champion's
    other = _shadow(served[:50], served[:50], version="3")

    report = analyse_shadow(pd.concat([rows, other]), shadow_version="2", frauds={"t20", "t21"})

    assert (report.rows, report.errors, report.compared) == (1000, 10, 980)
    assert report.error_rate == pytest.approx(0.01)
    assert report.served_versions == {"1": 980}
    assert report.mean_abs_diff == pytest.approx(
        float(np.mean(np.abs(shadowed[20:] - served[20:]))), rel=1e-9
    )
    assert report.score_psi is not None and report.score_psi > 0
    assert 0.0 <= report.decision_agreement <= 1.0  # type: ignore[operator]
    assert report.labels["shadow"]["positives"] == 2
    assert report.days == ["2026-01-28"]


def test_the_canary_analysis_uses_the_shadow_psi_when_no_offline_one_is_known() -> None:
    rng = np.random.default_rng(1)
    served = pd.concat(
        [
            _rows(1400, variant="champion", version="1", seed=0),
            _rows(400, variant="canary", version="2", seed=1, scores=rng.beta(1, 4, 400)),
        ],
        ignore_index=True,
    )
    shifted = _shadow(rng.beta(1, 20, 800), rng.beta(1, 4, 800))  # shifted like the canary

    without = analyse_canary(served, canary_version="2", champion_version="1", settings=SETTINGS)
    with_shadow = analyse_canary(
        served, canary_version="2", champion_version="1", settings=SETTINGS, shadow=shifted
    )

    assert without.shadow is None and without.expected_psi is None
    assert with_shadow.shadow is not None and with_shadow.shadow["rows"] == 800
    assert with_shadow.expected_psi == pytest.approx(with_shadow.shadow["score_psi"])
    # The live shift was foreseen by the shadow, so it no longer fails the canary alone.
    assert without.verdict == "rollback"
    assert with_shadow.verdict == "promote", with_shadow.reasons
