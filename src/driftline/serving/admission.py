"""Admission control and per-key rate limits of the scoring routes.

Overload is answered, never absorbed by scoring worse: :class:`Admission` lets at most
``max_in_flight`` scoring requests run at once and keeps at most ``max_queued`` more
waiting (first come, first served) for up to ``queue_seconds``; a request beyond the
queue, or one that waited too long, is shed with 503 and ``Retry-After``. A request that
is admitted therefore never meets more than ``max_in_flight`` others competing for the
CPU and the feature workers, so its feature lookup is not slowed into a fallback by
load. :class:`RateLimiter` is a token bucket per API key (429 with ``Retry-After``), so
one client cannot take the capacity of the others.

:class:`RateLimit` and :class:`AdmissionGuard` are the ASGI middleware applying them
to ``/v1/`` (the scoring routes; probes, metrics and admin are never limited), both
after the API-key check. The admission state lives on one event loop (the server's);
nothing here blocks it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

#: Path prefix of the routes under admission control and rate limits.
LIMITED_PREFIX = "/v1/"


@dataclass(frozen=True)
class Refusal:
    """Why a request is not served now: status, reason label and seconds to wait."""

    status: int
    reason: str
    retry_after: int
    detail: str


@dataclass
class AdmissionStats:
    """Counts since start and the current occupancy (read at scrape time)."""

    admitted: int = 0
    #: Shed requests by reason: ``queue_full``, ``queue_timeout``.
    shed: dict[str, int] = field(default_factory=lambda: {"queue_full": 0, "queue_timeout": 0})


class Admission:
    """At most ``max_in_flight`` requests at once, ``max_queued`` waiting in order.

    A slot freed by a finishing request goes straight to the oldest waiter, so a
    newcomer never overtakes the queue.
    """

    def __init__(self, max_in_flight: int, max_queued: int, queue_seconds: float) -> None:
        """Start empty."""
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.queue_seconds = queue_seconds
        self.in_flight = 0
        self.stats = AdmissionStats()
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def queued(self) -> int:
        """Requests waiting for a slot now."""
        return len(self._waiters)

    def retry_after(self) -> int:
        """Seconds a shed client should wait: the time the queue may take to drain."""
        return max(1, math.ceil(self.queue_seconds))

    async def enter(self) -> Refusal | None:
        """Take a slot, waiting in the queue if needed; a :class:`Refusal` when shed."""
        if self.in_flight < self.max_in_flight and not self._waiters:
            self.in_flight += 1
            self.stats.admitted += 1
            return None
        if len(self._waiters) >= self.max_queued:
            return self._shed("queue_full", f"{self.max_queued} requests already queued")
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, self.queue_seconds)
        except TimeoutError:
            return self._shed(
                "queue_timeout", f"no slot within {self.queue_seconds * 1000.0:.0f} ms"
            )
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.leave()  # handed a slot just as the client went away
            raise
        finally:
            if not waiter.done() or waiter.cancelled():
                self._discard(waiter)
        self.stats.admitted += 1
        return None

    def leave(self) -> None:
        """Give the slot back: to the oldest waiter if any, else free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves on; in_flight is unchanged
                return
        self.in_flight -= 1

    def _discard(self, waiter: asyncio.Future[None]) -> None:
        with contextlib.suppress(ValueError):  # already handed on by leave()
            self._waiters.remove(waiter)

    def _shed(self, reason: str, why: str) -> Refusal:
        self.stats.shed[reason] += 1
        return Refusal(
            503,
            reason,
            self.retry_after(),
            f"overloaded: {why} ({self.max_in_flight} in flight); retry later",
        )


def key_id(key: str) -> str:
    """A short, stable, non-secret name of an API key (for metrics and logs)."""
    return hashlib.sha256(key.encode()).hexdigest()[:8]


class RateLimiter:
    """Token bucket per API key: ``rate`` requests per second, bursts of ``burst``.

    ``rate`` 0 turns the limit off. Only keys the service accepts reach it (the key
    check runs first), so the set of buckets is bounded by ``serve_api_keys``.
    ``clock`` is injectable so tests need not sleep.
    """

    def __init__(
        self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Every bucket starts full."""
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, as of)
        #: Refused requests per :func:`key_id`.
        self.limited: dict[str, int] = {}

    def take(self, key: str) -> Refusal | None:
        """Spend one token of ``key``'s bucket; a 429 :class:`Refusal` when it is empty."""
        if self.rate <= 0:
            return None
        now = self._clock()
        with self._lock:
            tokens, since = self._buckets.get(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - since) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return None
            self._buckets[key] = (tokens, now)
            name = key_id(key)
            self.limited[name] = self.limited.get(name, 0) + 1
        wait = math.ceil((1.0 - tokens) / self.rate)
        return Refusal(
            429,
            "rate_limited",
            max(1, wait),
            f"rate limit of {self.rate:g} requests/s (burst {self.burst}) for this API key "
            "exceeded; retry later",
        )


class RateLimit:
    """ASGI middleware: the per-key rate limit on ``/v1/`` requests (429 when empty).

    Placed after the API-key check and before the body is read, so a refused client
    costs nothing more.
    """

    def __init__(self, app: ASGIApp, *, limiter: RateLimiter, key_header: str) -> None:
        """Limit ``app``'s scoring routes by the key in ``key_header``."""
        self.app = app
        self.limiter = limiter
        self.key_header = key_header.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Spend a token of the request's key, or refuse it."""
        if scope["type"] == "http" and scope["path"].startswith(LIMITED_PREFIX):
            key = dict(scope["headers"]).get(self.key_header, b"").decode("latin-1")
            refusal = self.limiter.take(key)
            if refusal is not None:
                await _refuse(refusal, scope, receive, send)
                return
        await self.app(scope, receive, send)


class AdmissionGuard:
    """ASGI middleware: admission control of ``/v1/`` requests (503 when shed).

    Placed after the body has been read, so an upload holds no slot; the slot is given
    back when the app has sent its response.
    """

    def __init__(self, app: ASGIApp, *, admission: Admission) -> None:
        """Admit ``app``'s scoring requests through ``admission``."""
        self.app = app
        self.admission = admission

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wait for a slot (or refuse), run the app, give the slot back."""
        if scope["type"] != "http" or not scope["path"].startswith(LIMITED_PREFIX):
            await self.app(scope, receive, send)
            return
        refusal = await self.admission.enter()
        if refusal is not None:
            await _refuse(refusal, scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self.admission.leave()


async def _refuse(refusal: Refusal, scope: Scope, receive: Receive, send: Send) -> None:
    response = JSONResponse(
        {"detail": refusal.detail},
        status_code=refusal.status,
        headers={"Retry-After": str(refusal.retry_after)},
    )
    await response(scope, receive, send)
