"""Request and response bodies of the scoring API (pydantic v2).

A transaction carries the fields of ``driftline.core.schemas.TRANSACTIONS``; categorical
fields must hold one of the simulator's vocabularies, so a typo is a 422 naming the
field rather than an "unknown" category the model silently scores.

Types are strict (no coercion): a string or a boolean is never an amount or an id, though
a JSON integer is a valid amount. Amounts must be finite (``NaN``, ``Infinity`` and
``1e400``, which parses as infinity, are refused); ids must fit the store's int64 keys;
strings must not hold control characters (lone surrogates are refused by pydantic as
invalid unicode). The amount's upper bound and the plausible time range are settings and
are checked by the routes (see ``api.range_errors``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    Field,
    Strict,
    StrictStr,
    StringConstraints,
)

from driftline.core.schemas import CHANNELS, CURRENCIES, MERCHANT_CATEGORIES

Variant = Literal["champion", "canary"]
#: Who answered a row: the routed model, or a link of the fallback chain when the
#: champion failed on it (the previous champion, then the rule-based score).
AnsweredBy = Literal["champion", "canary", "previous_champion", "rules"]
Decision = Literal["decline", "approve"]


def _one_of(allowed: tuple[str, ...]) -> Callable[[str], str]:
    """A validator accepting only the values in ``allowed``."""

    def check(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return value

    return check


#: Unicode's control characters (category ``Cc``) and surrogates (``Cs``), exactly.
_NOT_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _printable(value: str) -> str:
    """Refuse control characters and lone surrogates (not text; they break logs)."""
    if (found := _NOT_TEXT.search(value)) is not None:
        raise ValueError(
            f"must not contain control characters or lone surrogates "
            f"(U+{ord(found.group()):04X} at {found.start()})"
        )
    return value


#: Largest entity id: the feature store keys entities by int64.
MAX_ID = 2**63 - 1
Id = Annotated[int, Strict(), Field(gt=0, le=MAX_ID)]
Printable = AfterValidator(_printable)


class Transaction(BaseModel):
    """One card transaction to score."""

    transaction_id: Annotated[StrictStr, StringConstraints(min_length=1, max_length=64), Printable]
    ts: AwareDatetime
    user_id: Id
    card_id: Id
    merchant_id: Id
    merchant_category: Annotated[StrictStr, AfterValidator(_one_of(MERCHANT_CATEGORIES))]
    merchant_country: Annotated[StrictStr, StringConstraints(pattern=r"^[A-Z]{2}$")]
    amount: Annotated[float, Strict(), Field(gt=0, allow_inf_nan=False)]
    currency: Annotated[StrictStr, AfterValidator(_one_of(CURRENCIES))]
    channel: Annotated[StrictStr, AfterValidator(_one_of(CHANNELS))]
    device_id: Annotated[StrictStr, StringConstraints(min_length=1, max_length=128), Printable]


class Batch(BaseModel):
    """Several transactions scored in one call (at most ``serve_max_batch``)."""

    transactions: Annotated[list[Transaction], Field(min_length=1)]


class Score(BaseModel):
    """The verdict on one transaction.

    ``variant`` is the variant the row was served as; ``answered_by`` who produced the
    score (``previous_champion`` or ``rules`` when the champion failed on it) and
    ``model_version`` that model's version (``rules-1`` for the rules).
    """

    transaction_id: str
    score: Annotated[float, Field(ge=0.0, le=1.0)]
    decision: Decision
    model_version: str
    variant: Variant
    answered_by: AnsweredBy
    features_fallback: bool


class BatchScores(BaseModel):
    """Verdicts of a batch, in request order."""

    scores: list[Score]


class CanaryWeight(BaseModel):
    """Share of users routed to the canary."""

    weight: Annotated[float, Strict(), Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class CanaryStateChange(BaseModel):
    """Pause, resume or abort the canary (paused and aborted route nobody to it)."""

    state: Literal["running", "paused", "aborted"]


class CanaryStatus(BaseModel):
    """The canary routing this replica applies, and where it comes from.

    ``source`` is ``registry`` when the registry records a control for the current
    canary (every replica follows it), else ``settings`` (``serve_canary_weight``).
    """

    canary: str | None
    weight: float
    state: Literal["running", "paused", "aborted"]
    serving_weight: float
    source: Literal["registry", "settings"]
    actor: str = ""
    updated: str = ""
