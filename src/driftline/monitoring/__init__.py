"""Monitoring plane: drift of the served traffic and the retrain decision.

Importing this package has no side effects; Evidently and scikit-learn are imported by
the functions that use them.
"""

from driftline.monitoring.drift import (
    Decision,
    DriftLog,
    DriftResult,
    compute_drift,
    decide,
)

__all__ = ["Decision", "DriftLog", "DriftResult", "compute_drift", "decide"]
