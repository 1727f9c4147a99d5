"""Deterministic, vectorized card-transaction simulator.

The simulator is the upstream "payment system" of the reference use case. It writes
one day of card transactions, the chargebacks (fraud labels) reported that day and
the ground truth into the lake's landing zone (:mod:`~driftline.simulator.landing`)::

    {lake_uri}/landing/{dataset}/dt=YYYY-MM-DD/{dataset}.parquet
    {lake_uri}/simulator_truth/dt=YYYY-MM-DD/truth.parquet

Design, module by module:

* :mod:`~driftline.simulator.config`: what determines the data (:class:`SimulatorConfig`,
  :class:`DriftScenario`).
* :mod:`~driftline.simulator.population`: users, cards, devices and merchants, derived
  only from ``(seed, anchor)``; :mod:`~driftline.simulator.days` draws every day's
  randomness only from ``(seed, day)``, so any day can be regenerated alone and equals
  the same day generated inside a range.
* :mod:`~driftline.simulator.legit`: legit spending follows per-user habits (favourite
  merchants, home country, known devices, lognormal amounts around a typical spend) with
  an hour-of-day profile (:mod:`~driftline.simulator.rows`) and weekday volume variation.
* :mod:`~driftline.simulator.patterns`: fraud comes in learnable patterns:
  ``card_testing`` (bursts of tiny online amounts), ``account_takeover`` (new device,
  foreign merchants, large amounts), ``merchant_compromise`` (a few merchants per week
  with a high fraud share) and, under the ``new_fraud_pattern`` drift scenario,
  ``bust_out`` (large amounts at home with the usual device, which evades the older
  signals).
* :mod:`~driftline.simulator.transactions`: the transactions and ground-truth tables.
* :mod:`~driftline.simulator.labels`: chargebacks arrive 1..``max_label_delay_days``
  days after the transaction.
* :mod:`~driftline.simulator.bad_batches`: bad batches deliberately corrupt one day's
  landing file for validation to catch.

Everything is pure numpy over whole days (no per-transaction Python loops): a
million transactions per day take a few seconds. Importing the package only defines
constants and functions; nothing is generated or written until a function is called.
"""

from driftline.simulator.bad_batches import (
    LABEL_BAD_BATCH_KINDS,
    BadBatch,
    BadBatchKind,
    LandingDataset,
    apply_bad_batch,
)
from driftline.simulator.config import DriftScenario, ScenarioName, SimulatorConfig
from driftline.simulator.labels import simulate_labels
from driftline.simulator.landing import (
    DayResult,
    SimulationResult,
    landing_path,
    truth_path,
    write_landing,
    write_parquet,
)
from driftline.simulator.rows import FRAUD_TYPES
from driftline.simulator.transactions import TRUTH, simulate_transactions
from driftline.simulator.units import DAY_US, HOUR_US, MINUTE_US, SECOND_US

__all__ = [
    "DAY_US",
    "FRAUD_TYPES",
    "HOUR_US",
    "LABEL_BAD_BATCH_KINDS",
    "MINUTE_US",
    "SECOND_US",
    "TRUTH",
    "BadBatch",
    "BadBatchKind",
    "DayResult",
    "DriftScenario",
    "LandingDataset",
    "ScenarioName",
    "SimulationResult",
    "SimulatorConfig",
    "apply_bad_batch",
    "landing_path",
    "simulate_labels",
    "simulate_transactions",
    "truth_path",
    "write_landing",
    "write_parquet",
]
