"""Routes of the scoring service: probes, metrics, scoring and admin.

``/health``, ``/ready`` and ``/metrics`` are open; ``/v1/*`` and ``/admin/*`` need an
``X-API-Key`` header (401 when missing, 403 when not one of ``serve_api_keys``).
Scoring routes validate their body themselves (:func:`parsed`: pydantic's JSON mode on
the raw bytes), run the scorer on the service's own threads (model inference and the
store calls must not block the event loop; asyncio's executor costs a fraction of
FastAPI's thread-pool hand-off per request) and return their JSON serialised once
(:func:`json_response`, no second validation against the response model). The OpenAPI
document still describes both bodies.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, HTTPException, Request, Response, Security, status
from fastapi.exceptions import RequestValidationError
from fastapi.security import APIKeyHeader
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ValidationError

from driftline.core.settings import Settings
from driftline.lifecycle import promotion
from driftline.lifecycle.registry import CanaryStateName
from driftline.serving.admission import Admission, RateLimiter
from driftline.serving.metrics import Metrics
from driftline.serving.models import ModelProvider
from driftline.serving.schemas import (
    Batch,
    BatchScores,
    CanaryStateChange,
    CanaryStatus,
    CanaryWeight,
    Score,
    Transaction,
)
from driftline.serving.scoring import NotReadyError, Scorer

log = logging.getLogger(__name__)

API_KEY_HEADER = "X-API-Key"


@dataclass(frozen=True)
class Limits:
    """Bounds that are runtime settings, so not in the schema: checked by the routes."""

    max_amount: float
    min_ts: datetime
    max_ts: datetime


@dataclass
class Service:
    """What the routes share (one per app, on ``app.state.service``)."""

    scorer: Scorer
    models: ModelProvider
    metrics: Metrics
    api_keys: tuple[str, ...]
    max_batch: int
    limits: Limits
    #: Admission control and the per-key rate limit (applied by the app's middleware).
    admission: Admission | None = None
    limiter: RateLimiter | None = None
    #: Who answers: ``instance_id`` (fixed at app creation), ``pid`` and ``home``.
    identity: dict[str, Any] = field(default_factory=dict)
    #: The registry the admin routes write the canary control to (None: refused, 503).
    settings: Settings | None = None
    #: Threads the scoring routes run the scorer on (None: asyncio's default executor).
    executor: Executor | None = None


async def get_service(request: Request) -> Service:
    """The app's :class:`Service` (async: FastAPI runs a sync dependency on its thread
    pool, a hand-off per request and dependency)."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
_api_key = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


#: Path prefixes that need an API key.
PROTECTED = ("/v1/", "/admin/")


def api_key_problem(key: str | None, known: Sequence[str]) -> HTTPException | None:
    """Why ``key`` is refused (401 missing, 403 unknown; constant-time compare), or None."""
    if not key:
        return HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"missing {API_KEY_HEADER} header",
            headers={"WWW-Authenticate": "ApiKey"},
        )
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in known):
        return HTTPException(status.HTTP_403_FORBIDDEN, "invalid API key")
    return None


async def require_api_key(
    service: ServiceDep, key: Annotated[str | None, Security(_api_key)]
) -> None:
    """Reject requests without a valid API key (also declares the scheme in OpenAPI).

    The app's middleware applies the same check before the body is read, so an
    unauthenticated request never learns anything about input validation.
    """
    problem = api_key_problem(key, service.api_keys)
    if problem is not None:
        raise problem


probes = APIRouter(tags=["probes"])
scoring = APIRouter(prefix="/v1", tags=["scoring"], dependencies=[Depends(require_api_key)])
admin = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_api_key)])


@probes.get("/health")
def health() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@probes.get("/ready")
def ready(service: ServiceDep, response: Response) -> dict[str, Any]:
    """200 once a champion is loaded, else 503 (keeps the pod out of the Service).

    The body also says which server answers (``instance_id``, ``pid``, ``home``: its
    state folder), so that whoever started it can tell it from another one on the port.
    """
    models = service.models.models
    if models.champion is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return {
        "ready": models.champion is not None,
        "champion": models.champion and models.champion.version,
        "canary": models.canary and models.canary.version,
        **service.identity,
    }


@probes.get("/metrics")
def metrics(service: ServiceDep) -> Response:
    """Prometheus exposition of this app's registry."""
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)


Located = tuple[tuple[str | int, ...], Transaction]


def range_errors(located: Sequence[Located], limits: Limits) -> list[dict[str, Any]]:
    """Pydantic-style errors for amounts above and times outside the settings' bounds.

    Aware datetimes compare without conversion, so a time such as
    ``0001-01-01T00:00:00+05:00`` (which has no UTC form) is refused here, before the
    scorer converts anything.
    """
    errors: list[dict[str, Any]] = []
    for loc, txn in located:
        if txn.amount > limits.max_amount:
            errors.append(
                {
                    "type": "less_than_equal",
                    "loc": (*loc, "amount"),
                    "msg": f"Input should be less than or equal to {limits.max_amount}",
                }
            )
        if not limits.min_ts <= txn.ts < limits.max_ts:
            errors.append(
                {
                    "type": "timestamp_out_of_range",
                    "loc": (*loc, "ts"),
                    "msg": f"Input should be at or after {limits.min_ts.isoformat()} and "
                    f"before {limits.max_ts.isoformat()}",
                }
            )
    return errors


def _score(service: Service, transactions: list[Transaction]) -> list[Score]:
    """Score and count the rows answered (the fallback rate's denominator)."""
    try:
        scores = service.scorer.score(transactions)
    except NotReadyError as error:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, str(error)) from error
    service.metrics.rows.inc(len(scores))
    return scores


Body = TypeVar("Body", bound=BaseModel)


async def parsed(request: Request, model: type[Body]) -> Body:
    """The request's JSON body validated as ``model`` (422 naming each field, else).

    pydantic parses and validates the raw bytes in one pass (its JSON mode: the same
    strict types and checks as :mod:`driftline.serving.schemas`), without the Python
    object tree ``json.loads`` builds first. A body its parser refuses as JSON is parsed
    again by ``json.loads`` and validated from Python objects, as FastAPI does: that
    names the field of a lone surrogate (``"\\ud800"``), which the fast parser reports
    as invalid JSON with no location. Error locations start with ``body``.
    """
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        if not any(item["type"] == "json_invalid" for item in error.errors()):
            raise _invalid(error) from None
    try:
        return model.model_validate(json.loads(body))
    except ValidationError as error:
        raise _invalid(error) from None
    except ValueError as error:  # not JSON, or not UTF-8
        position = getattr(error, "pos", getattr(error, "start", 0))
        raise RequestValidationError(
            [{"type": "json_invalid", "loc": ("body", position), "msg": "JSON decode error"}]
        ) from None


def _invalid(error: ValidationError) -> RequestValidationError:
    """pydantic's errors as the 422 of a request body (type, ``body``-rooted loc, msg)."""
    return RequestValidationError(
        [
            {"type": item["type"], "loc": ("body", *item["loc"]), "msg": item["msg"]}
            for item in error.errors(include_url=False, include_input=False)
        ]
    )


async def scored(service: Service, transactions: list[Transaction]) -> list[Score]:
    """:func:`_score` on the service's scoring threads (the event loop never blocks)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(service.executor, _score, service, transactions)


def json_response(body: BaseModel) -> Response:
    """``body`` as JSON, serialised once (no second validation against a response model)."""
    return Response(body.__pydantic_serializer__.to_json(body), media_type="application/json")


def _request_schema(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI ``requestBody`` of a route that validates its body itself (:func:`parsed`).

    The model's JSON schema with its nested models inlined (``$defs`` would not resolve
    inside the OpenAPI document).
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": inline(schema)}},
        }
    }


@scoring.post("/score", response_model=Score, openapi_extra=_request_schema(Transaction))
async def score(request: Request, service: ServiceDep) -> Response:
    """Score one transaction."""
    transaction = await parsed(request, Transaction)
    if errors := range_errors([(("body",), transaction)], service.limits):
        raise RequestValidationError(errors)
    return json_response((await scored(service, [transaction]))[0])


@scoring.post("/score/batch", response_model=BatchScores, openapi_extra=_request_schema(Batch))
async def score_batch(request: Request, service: ServiceDep) -> Response:
    """Score up to ``serve_max_batch`` transactions in one call."""
    batch = await parsed(request, Batch)
    if len(batch.transactions) > service.max_batch:
        raise RequestValidationError(
            [
                {
                    "type": "too_long",
                    "loc": ("body", "transactions"),
                    "msg": f"List should have at most {service.max_batch} items",
                }
            ]
        )
    located = [(("body", "transactions", i), t) for i, t in enumerate(batch.transactions)]
    if errors := range_errors(located, service.limits):
        raise RequestValidationError(errors)
    return json_response(BatchScores(scores=await scored(service, batch.transactions)))


def canary_status(service: Service) -> CanaryStatus:
    """The canary routing this replica applies now."""
    control = service.models.canary_control
    canary = service.models.models.canary
    version = canary.version if canary is not None else None
    if control is None:
        weight = service.scorer.canary_weight
        return CanaryStatus(
            canary=version, weight=weight, state="running", serving_weight=weight, source="settings"
        )
    return CanaryStatus(
        canary=version,
        weight=control.weight,
        state=control.state,
        serving_weight=control.serving_weight,
        source="registry",
        actor=control.actor,
        updated=control.updated,
    )


def _change_canary(
    service: Service, weight: float | None = None, state: CanaryStateName | None = None
) -> CanaryStatus:
    """Write the canary control to the registry, then apply it here at once.

    Other replicas apply it at their next alias poll (``serve_poll_seconds``).
    """
    if service.settings is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "no registry configured")
    actor = f"admin api (instance {service.identity.get('instance_id', '?')})"
    try:
        written = datetime.now(UTC)  # clock-ok: when the control was written, not an interval
        promotion.set_canary_control(
            service.settings, actor=actor, weight=weight, state=state, now=written
        )
    except promotion.PromotionError as error:
        raise HTTPException(status.HTTP_409_CONFLICT, str(error)) from error
    except Exception as error:  # the registry is down: nothing changed anywhere
        log.exception("could not write the canary control")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "registry unavailable; canary unchanged"
        ) from error
    service.models.refresh()
    return canary_status(service)


@admin.get("/canary")
def get_canary(service: ServiceDep) -> CanaryStatus:
    """The canary routing this replica applies (weight, state and their source)."""
    return canary_status(service)


@admin.put("/canary-weight")
def set_canary_weight(body: CanaryWeight, service: ServiceDep) -> CanaryStatus:
    """Change the share of users routed to the canary, on every replica (registry).

    409 when no canary is set; 503 when the registry cannot be written.
    """
    log.info("canary weight -> %s (written to the registry)", body.weight)
    return _change_canary(service, weight=body.weight)


@admin.put("/canary-state")
def set_canary_state(body: CanaryStateChange, service: ServiceDep) -> CanaryStatus:
    """Pause, resume or abort the canary on every replica (paused/aborted: weight 0).

    Aborting stops the routing only; the canary alias stays until the rollout concludes.
    """
    log.info("canary state -> %s (written to the registry)", body.state)
    return _change_canary(service, state=body.state)
