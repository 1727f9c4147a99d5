"""Request and response bodies of the scoring API (pydantic v2).

A transaction carries the fields of ``driftline.core.schemas.TRANSACTIONS``; categorical
fields must hold one of the simulator's vocabularies, so a typo is a 422 naming the
field rather than an "unknown" category the model silently scores. The amount's upper
bound is a setting and is checked by the app (see ``app.amount_errors``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import AfterValidator, AwareDatetime, BaseModel, Field, StringConstraints

from driftline.core.schemas import CHANNELS, CURRENCIES, MERCHANT_CATEGORIES

Variant = Literal["champion", "canary"]
Decision = Literal["decline", "approve"]


def _one_of(allowed: tuple[str, ...]) -> Callable[[str], str]:
    """A validator accepting only the values in ``allowed``."""

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return check


Id = Annotated[int, Field(gt=0)]


class Transaction(BaseModel):
    """One card transaction to score."""

    transaction_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    ts: AwareDatetime
    user_id: Id
    card_id: Id
    merchant_id: Id
    merchant_category: Annotated[str, AfterValidator(_one_of(MERCHANT_CATEGORIES))]
    merchant_country: Annotated[str, StringConstraints(pattern=r"^[A-Z]{2}$")]
    amount: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    currency: Annotated[str, AfterValidator(_one_of(CURRENCIES))]
    channel: Annotated[str, AfterValidator(_one_of(CHANNELS))]
    device_id: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class Batch(BaseModel):
    """Several transactions scored in one call (at most ``serve_max_batch``)."""

    transactions: Annotated[list[Transaction], Field(min_length=1)]


class Score(BaseModel):
    """The verdict on one transaction."""

    transaction_id: str
    score: Annotated[float, Field(ge=0.0, le=1.0)]
    decision: Decision
    model_version: str
    variant: Variant
    features_fallback: bool


class BatchScores(BaseModel):
    """Verdicts of a batch, in request order."""

    scores: list[Score]


class CanaryWeight(BaseModel):
    """Share of users routed to the canary."""

    weight: Annotated[float, Field(ge=0.0, le=1.0)]
