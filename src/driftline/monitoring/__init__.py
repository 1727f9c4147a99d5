"""Monitoring plane: drift of the served traffic and the retrain decision.

* :mod:`~driftline.monitoring.drift`: compute one interval's drift (:func:`measure_drift`,
  no I/O);
* :mod:`~driftline.monitoring.drift_report`: write its report files
  (:func:`write_drift_report`); :func:`compute_drift` does both;
* :mod:`~driftline.monitoring.policy`: the trigger policy (:func:`decide`, pure) and its
  :class:`TriggerDecision`;
* :mod:`~driftline.monitoring.drift_log`: the results and triggers kept between runs
  (:class:`DriftLog`).

Importing this package has no side effects; Evidently and scikit-learn are imported by
the functions that use them.
"""

from driftline.monitoring.drift import compute_drift, measure_drift
from driftline.monitoring.drift_log import DriftLog
from driftline.monitoring.drift_report import write_drift_report
from driftline.monitoring.policy import TriggerDecision, decide
from driftline.monitoring.result import DriftMeasurement, DriftResult

__all__ = [
    "DriftLog",
    "DriftMeasurement",
    "DriftResult",
    "TriggerDecision",
    "compute_drift",
    "decide",
    "measure_drift",
    "write_drift_report",
]
