"""The scoring app factory and the request-body size guard.

:func:`create_app` wires the feature source (Feast by default) behind its breaker, the
model provider (MLflow aliases by default), the prediction log and the metrics into a
FastAPI app; the model poller runs for the app's lifespan. Nothing is built at import.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from driftline.core.settings import Settings
from driftline.data.predictions import PredictionLog
from driftline.serving.api import (
    API_KEY_HEADER,
    PROTECTED,
    Service,
    admin,
    api_key_problem,
    probes,
    scoring,
)
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


def api_keys(settings: Settings) -> tuple[str, ...]:
    """The accepted API keys (comma-separated in ``serve_api_keys``)."""
    return tuple(key.strip() for key in settings.serve_api_keys.split(",") if key.strip())


def create_app(
    settings: Settings,
    *,
    features: FeatureSource | None = None,
    models: ModelProvider | None = None,
    clock: Callable[[], float] = time.monotonic,
    instance_id: str | None = None,
) -> FastAPI:
    """Build the scoring app.

    Args:
        settings: The ``serve_*`` settings, ``home`` (prediction log) and the registry.
        features: Online feature source; the Feast online store by default.
        models: Champion/canary provider; polls the MLflow aliases by default.
        clock: Monotonic clock of the feature-store circuit breaker (tests inject one).
        instance_id: Reported on ``/ready`` with the pid and ``home``; by default
            ``$DRIFTLINE_SERVE_INSTANCE_ID``, else a fresh uuid.

    Returns:
        The app; its lifespan starts and stops the model poller.
    """
    provider = models or ModelProvider(settings)
    source = features or FeastFeatureSource(settings)
    breaker = CircuitBreaker(
        settings.serve_breaker_failures, settings.serve_breaker_reset_seconds, clock
    )
    guarded = GuardedFeatures(
        source,
        timeout_seconds=settings.serve_feature_timeout_ms / 1000.0,
        breaker=breaker,
    )
    metrics = Metrics(provider, breaker)
    scorer = Scorer(
        features=guarded,
        models=provider,
        predictions=PredictionLog(settings),
        metrics=metrics,
        threshold=settings.serve_threshold,
        canary_weight=settings.serve_canary_weight,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        _warm_up(source)
        provider.start()
        try:
            yield
        finally:
            provider.stop()
            guarded.close()

    app = FastAPI(title="driftline scoring", version="1", lifespan=lifespan)
    app.state.service = Service(
        scorer=scorer,
        models=provider,
        metrics=metrics,
        api_keys=api_keys(settings),
        max_batch=settings.serve_max_batch,
        max_amount=settings.serve_max_amount,
        identity={
            "instance_id": instance_id or os.environ.get(INSTANCE_ENV) or uuid.uuid4().hex,
            "pid": os.getpid(),
            "home": str(settings.home),
        },
    )
    app.add_middleware(BodyLimit, max_bytes=settings.serve_max_body_bytes)

    async def invalid(request: Request, error: Exception) -> Response:
        """Count rejected requests, then answer with FastAPI's default 422 body."""
        metrics.errors.labels("none", "invalid_request").inc()
        assert isinstance(error, RequestValidationError)
        return await request_validation_exception_handler(request, error)

    app.add_exception_handler(RequestValidationError, invalid)
    keys = api_keys(settings)

    @app.middleware("http")
    async def authenticate(request: Request, call_next: Callable[..., Any]) -> Response:
        """API key first: 401/403 before the body is parsed or validated."""
        if request.url.path.startswith(PROTECTED):
            problem = api_key_problem(request.headers.get(API_KEY_HEADER), keys)
            if problem is not None:
                return JSONResponse(
                    {"detail": problem.detail},
                    status_code=problem.status_code,
                    headers=problem.headers,
                )
        response: Response = await call_next(request)
        return response

    for router in (probes, scoring, admin):
        app.include_router(router)
    return app
