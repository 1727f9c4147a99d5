"""The scoring app factory, the request-body size guard and the request counter.

:func:`create_app` wires the feature source (Feast by default) behind its coalescing
lookups and breaker, the event store of the fresh features (``event_store_url``; opened
at start-up, closed at shutdown) behind its own guard and breaker, the model provider
(MLflow aliases by default), the prediction log, admission control, the per-key rate
limit and the metrics into a FastAPI app; the model poller runs for the app's lifespan.
Nothing is built at import.
A ``/v1/`` request passes, in order: the request counter, the API-key check (401/403),
the per-key rate limit (429), the body-size guard (413), admission control (503 when
shed), then validation (422) and scoring.
Validation errors are answered with the field's path, the error type and a message, never
the input itself (it may not be encodable as JSON: NaN, lone surrogates).
"""

from __future__ import annotations

import gc
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import Counter
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from driftline.core.settings import DEV_API_KEY, Settings
from driftline.data.predictions import PredictionLog
from driftline.serving.admission import Admission, AdmissionGuard, RateLimit, RateLimiter
from driftline.serving.api import (
    API_KEY_HEADER,
    PROTECTED,
    Limits,
    Service,
    admin,
    api_key_problem,
    probes,
    scoring,
)
from driftline.serving.fresh import EventMetrics, EventState, GuardedEvents
from driftline.serving.lookup import (
    CircuitBreaker,
    FeastFeatureSource,
    FeatureSource,
    GuardedFeatures,
)
from driftline.serving.metrics import Metrics
from driftline.serving.models import ModelProvider
from driftline.serving.scoring import Scorer

log = logging.getLogger(__name__)

#: Environment variable naming the app's instance id (the process starting a server sets
#: it to recognise its own server on ``/ready``); without it each app gets a fresh uuid.
INSTANCE_ENV = "DRIFTLINE_SERVE_INSTANCE_ID"


class BodyLimit:
    """ASGI middleware: 413 for bodies over ``max_bytes``, before anything parses them.

    A declared ``Content-Length`` over the limit is refused at once; otherwise the body
    is read (counting the streamed bytes, so a lying or missing length is caught too)
    and replayed to the app.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        """Guard ``app``."""
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Buffer the body up to the limit, then call the app with it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size, more = 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                break  # client went away; let the app see an empty body
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            more = message.get("more_body", False)
        await self.app(scope, _replay(b"".join(chunks), receive), send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.max_bytes} bytes"}, status_code=413
        )
        await response(scope, receive, send)


class ApiKeyCheck:
    """ASGI middleware: the API key of ``/v1/`` and ``/admin/`` requests (401/403).

    Checked before the body is read or validated, so an unauthenticated request never
    learns anything about input validation (the routes' ``require_api_key`` dependency
    applies the same rule and declares the scheme in OpenAPI).
    """

    def __init__(self, app: ASGIApp, *, keys: tuple[str, ...]) -> None:
        """Guard ``app`` with the accepted ``keys``."""
        self.app = app
        self.keys = keys
        self.header = API_KEY_HEADER.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse a protected request without a valid key; pass everything else on."""
        if scope["type"] == "http" and scope["path"].startswith(PROTECTED):
            key = next((v for k, v in scope["headers"] if k == self.header), None)
            problem = api_key_problem(key and key.decode("latin-1"), self.keys)
            if problem is not None:
                response = JSONResponse(
                    {"detail": problem.detail},
                    status_code=problem.status_code,
                    headers=problem.headers,
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestCounter:
    """ASGI middleware: count every response by route template and status code.

    Outermost of the app's middleware, so 401/403 from the key check and 413 from the
    body guard are counted too; an exception that escapes the app counts as the 500 the
    server answers with (it is re-raised for that).
    """

    def __init__(self, app: ASGIApp, counter: Counter) -> None:
        """Count the responses of ``app`` in ``counter`` (labels route, status)."""
        self.app = app
        self.counter = counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app, noting the status it starts its response with."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status: int | None = None

        async def noting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, noting)
        except Exception:
            self.counter.labels(route_template(scope), str(status or 500)).inc()
            raise
        self.counter.labels(route_template(scope), str(status or 500)).inc()


def route_template(scope: Scope) -> str:
    """The path template of the route ``scope`` matches (``unmatched`` if none).

    Templates, never raw paths, so a client cannot grow the label set.
    """
    for route in scope["app"].router.routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return str(route.path)
    return "unmatched"


def _printable(value: str) -> str:
    """``value`` made encodable (lone surrogates escaped as ``\\udxxx``)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def validation_body(error: RequestValidationError) -> dict[str, Any]:
    """The 422 body: per error its ``type``, ``loc`` (the field's path) and ``msg``.

    Unlike FastAPI's default it never echoes the input: a NaN, an infinity or a lone
    surrogate cannot be encoded as JSON (the default handler fails with a 500 on them),
    and a rejected value has no business in a response anyway.
    """
    return {
        "detail": [
            {
                "type": str(item.get("type", "invalid")),
                "loc": [
                    part if isinstance(part, int) else _printable(str(part))
                    for part in item.get("loc", ())
                ],
                "msg": _printable(str(item.get("msg", ""))),
            }
            for item in error.errors()
        ]
    }


class InsecureSettingsError(ValueError):
    """The serving settings are unsafe for this environment (the service must not start)."""


def api_keys(settings: Settings) -> tuple[str, ...]:
    """The accepted API keys (comma-separated in ``serve_api_keys``)."""
    return tuple(key.strip() for key in settings.serve_api_keys.split(",") if key.strip())


def check_api_keys(settings: Settings) -> tuple[str, ...]:
    """The accepted API keys, refusing settings the service must not start with.

    Raises:
        InsecureSettingsError: No key is configured, or the documented development key
            is accepted outside the local environment.
    """
    keys = api_keys(settings)
    if not keys:
        raise InsecureSettingsError(
            "serve_api_keys is empty: set DRIFTLINE_SERVE_API_KEYS (comma-separated)"
        )
    if DEV_API_KEY in keys and not settings.is_local:
        raise InsecureSettingsError(
            f"the development API key is refused in environment {settings.environment!r}: "
            "set DRIFTLINE_SERVE_API_KEYS from a secret (the key is only accepted when "
            "DRIFTLINE_ENVIRONMENT is local)"
        )
    return keys


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that yields ``body`` once, then defers to the real one."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


def _warm_up(source: FeatureSource) -> None:
    """Let a source open its connections before traffic (a failure only logs)."""
    warm_up = getattr(source, "warm_up", None)
    if warm_up is None:
        return
    try:
        warm_up()
    except Exception:  # the breaker and fallback handle a store that stays down
        log.warning("feature store warm-up failed; lookups will retry", exc_info=True)


def _event_store_opener(settings: Settings) -> Callable[[], EventState]:
    """Opens the event store ``settings`` name (imported on first use, not at import)."""

    def open_store() -> EventState:
        from driftline.data.events import open_event_store

        return open_event_store(settings)

    return open_store


def create_app(
    settings: Settings,
    *,
    features: FeatureSource | None = None,
    models: ModelProvider | None = None,
    events: Callable[[], EventState] | None = None,
    clock: Callable[[], float] = time.monotonic,
    instance_id: str | None = None,
) -> FastAPI:
    """Build the scoring app.

    Args:
        settings: The ``serve_*`` settings, ``home`` (prediction log) and the registry.
        features: Online feature source; the Feast online store by default.
        models: Champion/canary provider; polls the MLflow aliases by default.
        events: Opens the event store of the fresh features; by default
            ``driftline.data.events.open_event_store(settings)``.
        clock: Monotonic clock of the two stores' circuit breakers (tests inject one).
        instance_id: Reported on ``/ready`` with the pid and ``home``; by default
            ``$DRIFTLINE_SERVE_INSTANCE_ID``, else a fresh uuid.

    Returns:
        The app; its lifespan starts and stops the model poller.

    Raises:
        InsecureSettingsError: See :func:`check_api_keys`.
    """
    keys = check_api_keys(settings)
    provider = models or ModelProvider(settings)
    source = features or FeastFeatureSource(settings)
    breaker = CircuitBreaker(
        settings.serve_breaker_failures, settings.serve_breaker_reset_seconds, clock
    )
    guarded = GuardedFeatures(
        source,
        timeout_seconds=settings.serve_feature_timeout_ms / 1000.0,
        per_entity_seconds=settings.serve_feature_timeout_per_entity_ms / 1000.0,
        breaker=breaker,
        workers=settings.serve_feature_workers,
        queue_seconds=settings.serve_feature_queue_ms / 1000.0,
    )
    fresh = GuardedEvents(
        events or _event_store_opener(settings),
        timeout_seconds=settings.serve_event_timeout_ms / 1000.0,
        per_event_seconds=settings.serve_event_timeout_per_event_ms / 1000.0,
        breaker=CircuitBreaker(
            settings.serve_breaker_failures,
            settings.serve_breaker_reset_seconds,
            clock,
            name="event store",
        ),
        queue_seconds=settings.serve_feature_queue_ms / 1000.0,
    )
    admission = Admission(
        settings.serve_max_in_flight,
        settings.serve_max_queued,
        settings.serve_queue_timeout_ms / 1000.0,
    )
    limiter = RateLimiter(settings.serve_rate_limit_per_second, settings.serve_rate_limit_burst)
    metrics = Metrics(provider, breaker, features=guarded, admission=admission, limiter=limiter)
    scorer = Scorer(
        features=guarded,
        models=provider,
        predictions=PredictionLog(settings),
        metrics=metrics,
        threshold=settings.serve_threshold,
        canary_weight=settings.serve_canary_weight,
        batch_window_ms=settings.serve_batch_window_ms,
        batch_max_rows=settings.serve_batch_max_rows,
        shadow_queue=settings.serve_shadow_queue,
        events=fresh,
    )
    metrics.registry.register(EventMetrics(fresh))
    # One scoring thread per admitted request: a request never waits for a thread.
    executor = ThreadPoolExecutor(settings.serve_max_in_flight, thread_name_prefix="score")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        _warm_up(source)
        fresh.open()
        provider.start()
        # Everything imported and opened so far lives as long as the process: out of the
        # collector's sight, a full collection no longer stops every thread for a
        # third of a second (measured: 370 ms over 368k objects on the 2-core machine),
        # which otherwise made in-flight feature lookups time out.
        gc.freeze()
        try:
            yield
        finally:
            gc.unfreeze()
            provider.stop()
            scorer.close()
            # The prediction log's buffered rows (and the shadow log's) reach the lake:
            # uvicorn runs this shutdown on SIGTERM, after the in-flight requests.
            scorer.predictions.close()
            guarded.close()
            fresh.close()
            executor.shutdown(wait=False)

    app = FastAPI(title="driftline scoring", version="1", lifespan=lifespan)
    app.state.service = Service(
        scorer=scorer,
        models=provider,
        metrics=metrics,
        api_keys=keys,
        max_batch=settings.serve_max_batch,
        limits=Limits(
            max_amount=settings.serve_max_amount,
            min_ts=settings.serve_min_timestamp,
            max_ts=settings.serve_max_timestamp,
        ),
        admission=admission,
        limiter=limiter,
        identity={
            "instance_id": instance_id or os.environ.get(INSTANCE_ENV) or uuid.uuid4().hex,
            "pid": os.getpid(),
            "home": str(settings.home),
        },
        settings=settings,
        executor=executor,
    )
    # Innermost first (Starlette wraps each added middleware around the previous ones).
    app.add_middleware(AdmissionGuard, admission=admission)
    app.add_middleware(BodyLimit, max_bytes=settings.serve_max_body_bytes)
    app.add_middleware(RateLimit, limiter=limiter, key_header=API_KEY_HEADER)

    async def invalid(request: Request, error: Exception) -> Response:
        """Count rejected requests, then answer 422 naming each field (no input echoed)."""
        metrics.errors.labels("none", "invalid_request").inc()
        assert isinstance(error, RequestValidationError)
        return JSONResponse(validation_body(error), status_code=422)

    app.add_exception_handler(RequestValidationError, invalid)

    app.add_middleware(ApiKeyCheck, keys=keys)  # 401/403 before the body is read
    app.add_middleware(RequestCounter, counter=metrics.requests)  # outermost: counts all
    for router in (probes, scoring, admin):
        app.include_router(router)
    return app
