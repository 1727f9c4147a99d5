"""Admission control, the per-key token bucket and the breaker's transitions, in isolation.

Admission runs on a real event loop (``asyncio.run``); the rate limiter and the breaker
take a clock the test moves by hand, so nothing here sleeps except the admission queue's
own timeout (a fraction of a second).
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from driftline.serving.admission import Admission, RateLimiter, key_id
from driftline.serving.lookup import CircuitBreaker


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_admission_queues_in_order_then_sheds_when_full() -> None:
    async def scenario() -> None:
        admission = Admission(max_in_flight=2, max_queued=2, queue_seconds=5.0)
        assert await admission.enter() is None
        assert await admission.enter() is None
        order: list[str] = []

        async def wait(name: str) -> None:
            assert await admission.enter() is None
            order.append(name)

        first = asyncio.create_task(wait("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(wait("second"))
        await asyncio.sleep(0)
        assert (admission.in_flight, admission.queued) == (2, 2)

        refused = await admission.enter()  # the queue is full: shed at once
        assert refused is not None and refused.status == 503
        assert refused.reason == "queue_full" and refused.retry_after == 5
        assert "overloaded" in refused.detail

        admission.leave()  # the slot goes to the oldest waiter
        await first
        assert order == ["first"] and admission.in_flight == 2
        admission.leave()
        await second
        assert order == ["first", "second"]
        for _ in range(2):
            admission.leave()
        assert (admission.in_flight, admission.queued) == (0, 0)
        assert admission.stats.admitted == 4
        assert admission.stats.shed == {"queue_full": 1, "queue_timeout": 0}

    asyncio.run(scenario())


def test_a_queued_request_times_out_and_a_cancelled_one_keeps_no_slot() -> None:
    async def scenario() -> None:
        admission = Admission(max_in_flight=1, max_queued=4, queue_seconds=0.05)
        assert await admission.enter() is None
        timed_out = await admission.enter()
        assert timed_out is not None and timed_out.reason == "queue_timeout"
        assert timed_out.retry_after == 1 and admission.queued == 0

        gone = asyncio.create_task(admission.enter())  # the client disconnects
        await asyncio.sleep(0)
        gone.cancel()
        with pytest.raises(asyncio.CancelledError):
            await gone
        assert admission.queued == 0
        admission.leave()
        assert admission.in_flight == 0  # nothing leaked: a newcomer gets in at once
        assert await admission.enter() is None
        assert admission.stats.shed["queue_timeout"] == 1

    asyncio.run(scenario())


def test_rate_limit_is_a_token_bucket_per_key() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rate=2.0, burst=3, clock=clock)

    assert [limiter.take("key-a") for _ in range(3)] == [None, None, None]
    refused = limiter.take("key-a")
    assert refused is not None and refused.status == 429 and refused.retry_after == 1
    assert "rate limit" in refused.detail and "key-a" not in refused.detail
    assert limiter.take("key-b") is None  # another key has its own bucket
    clock.now += 0.5  # one token back at 2/s
    assert limiter.take("key-a") is None
    assert limiter.take("key-a") is not None
    clock.now += 100.0  # refills to the burst, not beyond
    assert [limiter.take("key-a") is None for _ in range(4)] == [True, True, True, False]
    assert limiter.limited == {key_id("key-a"): 3}

    slow = RateLimiter(rate=0.1, burst=1, clock=clock)
    assert slow.take("k") is None
    later = slow.take("k")
    assert later is not None and later.retry_after == 10  # seconds to the next token
    assert all(RateLimiter(rate=0.0, burst=1).take("k") is None for _ in range(100))


def test_breaker_logs_each_transition_and_reports_its_state_when_idle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=2, reset_seconds=10.0, clock=clock)
    caplog.set_level(logging.INFO, logger="driftline.serving.lookup")

    breaker.record_failure("ConnectionError: down")
    assert breaker.state == "closed" and not caplog.records
    breaker.record_failure("TimeoutError: no answer after 80.0 ms (limit 50 ms)")
    assert breaker.state == "open" and not breaker.allow()
    opened = caplog.records[-1]
    assert opened.levelno == logging.WARNING
    assert "opens" in opened.getMessage() and "after 2 consecutive" in opened.getMessage()
    assert "no answer after 80.0 ms (limit 50 ms)" in opened.getMessage()

    clock.now += 10.0  # nobody calls: the state still reads half-open (the gauge's view)
    assert breaker.state == "half_open"
    assert "half-open" in caplog.records[-1].getMessage()
    assert breaker.allow() and not breaker.allow()  # exactly one trial
    breaker.record_failure("ConnectionError: still down")
    assert breaker.state == "open"
    assert "half-open trial failed" in caplog.records[-1].getMessage()

    clock.now += 10.0
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    closed = caplog.records[-1]
    assert closed.levelno == logging.INFO and "closes" in closed.getMessage()
    count = len(caplog.records)
    breaker.record_success()  # already closed: nothing more to say
    assert len(caplog.records) == count
