"""What determines the simulated data: the seed, sizes, drift scenarios and bad batches."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal, get_args

from driftline.simulator.bad_batches import BadBatch

ScenarioName = Literal["covariate_shift", "new_fraud_pattern"]


#: Largest intensity a scenario accepts (``new_fraud_pattern`` at 3 is 90% ``bust_out``).
MAX_INTENSITY = 3.0


@dataclass(frozen=True)
class DriftScenario:
    """A named drift that is active from ``start`` (inclusive) on, at an intensity.

    Attributes:
        name: ``covariate_shift`` (spending moves: at intensity 1 amounts inflate 30%,
            the online share of other purchases rises by 25 points and 15% of purchases
            move to a shifted category mix) or ``new_fraud_pattern`` (concept drift: the
            ``bust_out`` fraud pattern appears, at intensity 1 as 30% of the fraud).
        start: First day the drift is active.
        intensity: How strong the drift is, scaling every one of those effects
            linearly: 1 is the full drift above (the default), 0.3 a mild one, 0 none
            (the data equals a run without the scenario); at most :data:`MAX_INTENSITY`.
    """

    name: ScenarioName
    start: date
    intensity: float = 1.0

    def __post_init__(self) -> None:
        if self.name not in get_args(ScenarioName):
            raise ValueError(
                f"unknown drift scenario {self.name!r} (one of {', '.join(get_args(ScenarioName))})"
            )
        if not 0.0 <= self.intensity <= MAX_INTENSITY:
            raise ValueError(
                f"drift intensity {self.intensity} of {self.name} must lie in [0, {MAX_INTENSITY}]"
            )

    @classmethod
    def parse(cls, text: str) -> DriftScenario:
        """A scenario from ``NAME[:INTENSITY]@YYYY-MM-DD``, e.g. ``covariate_shift:0.3@2026-01-22``.

        Raises:
            ValueError: If the text does not have that form, or names an unknown
                scenario, a bad date or an intensity out of range.
        """
        head, at, day = text.strip().partition("@")
        name, colon, level = head.partition(":")
        if not at or not name or not day or (colon and not level):
            raise ValueError(
                f"drift scenario {text!r}: expected NAME[:INTENSITY]@YYYY-MM-DD, "
                "e.g. covariate_shift:0.3@2026-01-22"
            )
        try:
            start = date.fromisoformat(day)
            intensity = float(level) if colon else 1.0
        except ValueError as error:
            raise ValueError(f"drift scenario {text!r}: {error}") from None
        return cls(name, start, intensity)  # type: ignore[arg-type]

    def __str__(self) -> str:
        """The form :meth:`parse` reads."""
        level = "" if self.intensity == 1.0 else f":{self.intensity:g}"
        return f"{self.name}{level}@{self.start.isoformat()}"

    def active(self, day: date) -> bool:
        """Whether the drift is active on ``day`` (at any intensity above 0)."""
        return day >= self.start and self.intensity > 0.0


@dataclass(frozen=True)
class SimulatorConfig:
    """Everything that determines the simulated data.

    Attributes:
        seed: Seed of all randomness.
        rows_per_day: Mean number of transactions per day (weekdays vary around it).
        n_users: Population size; defaults to ``max(200, rows_per_day // 4)``.
        n_merchants: Merchant count; defaults to ``max(50, rows_per_day // 20)``.
        anchor: First simulated day; the population is derived from it and ``seed``.
        fraud_rate: Approximate share of fraudulent transactions.
        scenarios: Drift scenarios.
        bad_batches: Broken landing files to produce in
            :func:`~driftline.simulator.landing.write_landing`.
        max_label_delay_days: Longest delay between a transaction and its chargeback.
    """

    seed: int = 7
    rows_per_day: int = 5000
    n_users: int | None = None
    n_merchants: int | None = None
    anchor: date = date(2026, 1, 1)
    fraud_rate: float = 0.01
    scenarios: tuple[DriftScenario, ...] = ()
    bad_batches: tuple[BadBatch, ...] = ()
    max_label_delay_days: int = 10

    def __post_init__(self) -> None:
        if self.rows_per_day < 1:
            raise ValueError("rows_per_day must be positive")
        if not 0.0 <= self.fraud_rate <= 0.5:
            raise ValueError("fraud_rate must lie in [0, 0.5]")
        if self.max_label_delay_days < 1:
            raise ValueError("max_label_delay_days must be at least 1")
        if self.n_users is not None and self.n_users < 1:
            raise ValueError("n_users must be positive")
        if self.n_merchants is not None and self.n_merchants < 2:
            raise ValueError("n_merchants must be at least 2")

    @property
    def users(self) -> int:
        """Resolved population size."""
        return self.n_users if self.n_users is not None else max(200, self.rows_per_day // 4)

    @property
    def merchants(self) -> int:
        """Resolved merchant count."""
        if self.n_merchants is not None:
            return self.n_merchants
        return max(50, self.rows_per_day // 20)

    def drift_active(self, name: ScenarioName, day: date) -> bool:
        """Whether any scenario called ``name`` is active on ``day``."""
        return any(s.name == name and s.active(day) for s in self.scenarios)

    def drift_intensity(self, name: ScenarioName, day: date) -> float:
        """Intensity of drift ``name`` on ``day``: the strongest active scenario's, else 0."""
        return max(
            (s.intensity for s in self.scenarios if s.name == name and s.active(day)), default=0.0
        )
