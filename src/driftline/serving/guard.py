"""One coalescing guard in front of a store: batched calls, a fair timeout and a breaker.

:class:`CoalescingGuard` is what :class:`~driftline.serving.lookup.GuardedFeatures` (the
Feast read) and :class:`~driftline.serving.fresh.GuardedEvents` (the event store's
``record_and_read``) share; each of them only says what one call does with a batch of
items, what a fallback answer is and how its counts are named. Its rules:

* **Coalescing.** Each request's items wait in one queue; a free worker thread takes
  every pending request (whole requests, up to ``max_items`` distinct items) and answers
  them with one store call for their distinct items.
* **A timeout on the store call only.** The deadline starts when the worker starts the
  call and is ``timeout + per_item x (distinct items - 1)``, so waiting for a worker
  (bounded by ``queue_seconds``, then answered ``no_worker``) never counts as slowness of
  the store. A call past its deadline fails once for its whole batch, and the worker
  stuck in it is replaced (at most ``max_abandoned`` left behind).
* **Extensions.** Time lost that is not known to be the store's gives the call one more
  period, at most :data:`MAX_EXTENSIONS` in all, so a hung store still fails a few
  periods later. Three signals, checked at each deadline:

  - *stall*: the waiter itself woke well after the deadline (the whole process was
    stalled: a garbage collection, the host pausing it);
  - *saturated*: this process's CPU time since the call started is at least
    :data:`SATURATED_SHARE` of the wall time (its own threads kept the worker from
    running; measured in the serving bench on one pinned core, where merged reads of
    ~64 pairs that take 2 ms alone took 65 ms on average with 16 batch requests in
    flight);
  - *starved*: the worker thread spent at least :data:`STARVED_SHARE` of the call's
    wall time runnable but not running, i.e. waiting on the CPU run queue while other
    processes had the CPU (a store call that waits on I/O or a lock is not runnable,
    so it does not count). It is read from Linux's per-thread scheduler statistics
    (:func:`thread_times`), which add a wait only when it ends: a worker runnable at
    the deadline is taken to have waited all the time it neither ran nor had counted
    (:func:`starved`). Where ``/proc`` has none, this rule is off. Measured on the
    2-core machine under a load of 12-14, with the worker pinned to a core that 3
    CPU-hog processes share and 20 calls of 1 ms of CPU work in each of 25 runs: 20
    calls failed their 50 ms limit with this rule off (13 runs with failures), none
    with it on.
* **A circuit breaker** (any :class:`Breaker`): failed calls are recorded on it, and
  while it refuses calls a request gets the fallback at once (``breaker_open``).

A request is answered with an :class:`Outcome`: the store's answers for its items, or
None with the reason of the fallback (``store_failed``, ``breaker_open``,
``no_worker``); the specialisation turns that into its rows.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

#: Upper bounds (seconds) of the store-call duration histogram.
READ_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
#: Process CPU time over wall time, since a store call started, at or above which the
#: process counts as saturated (a store call waiting on I/O uses none of it; a process
#: whose own threads hold the GIL back-to-back uses about one CPU's worth).
SATURATED_SHARE = 0.8
#: The worker's run-queue wait over the wall time, since its call started, at or above
#: which the worker counts as starved of CPU by other processes.
STARVED_SHARE = 0.5
#: Most further periods a store call past its deadline is given (any of the rules).
MAX_EXTENSIONS = 3
#: Why a call past its deadline was given one more period.
EXTENSION_RULES = ("stall", "saturated", "starved")

Item = TypeVar("Item")
Answer = TypeVar("Answer")


class Breaker(Protocol):
    """The circuit breaker a guard records its calls on (``lookup.CircuitBreaker``)."""

    @property
    def state(self) -> str:
        """``closed``, ``open`` or ``half_open``."""
        ...

    def allow(self) -> bool:
        """Whether a call may go to the store now."""
        ...

    def record_success(self) -> None:
        """A call succeeded."""
        ...

    def record_failure(self, reason: str = ...) -> None:
        """A call failed for ``reason``."""
        ...


@dataclass(frozen=True)
class ThreadTimes:
    """A thread's scheduler times so far, in seconds (Linux ``schedstat``)."""

    #: Time run on a CPU.
    ran: float
    #: Time waited on a run queue, runnable but not running. The kernel adds a wait
    #: when it ends (the thread gets a CPU), so a wait still going on is not in it.
    waited: float
    #: Whether the thread is runnable (or running) at the reading; False when not asked.
    runnable: bool = False


class ThreadClock(Protocol):
    """Reads a thread's :class:`ThreadTimes` (:func:`thread_times`; tests pass their own)."""

    def __call__(self, tid: int, *, state: bool = False) -> ThreadTimes | None:
        """The times of thread ``tid`` of this process (None: unknown, the rule is off).

        ``state`` also asks whether it is runnable now (a second read).
        """
        ...


def thread_times(tid: int, *, state: bool = False) -> ThreadTimes | None:
    """Thread ``tid``'s time on a CPU and on the run queue, from ``/proc``.

    The first two fields of Linux's ``/proc/self/task/<tid>/schedstat`` (nanoseconds
    since the thread started; ``tid`` is :func:`threading.get_native_id` in that
    thread), and with ``state`` whether ``/proc/self/task/<tid>/stat`` says ``R``
    (running or runnable). None where the files are absent or unreadable (not Linux,
    ``/proc`` not mounted, a kernel without schedstats, a thread that has ended): the
    *starved* rule is then off. One read costs about 20 us on the 2-core machine.
    """
    task = f"/proc/self/task/{tid}"
    try:
        with open(f"{task}/schedstat", "rb") as stats:
            ran, waited = (int(field) / 1e9 for field in stats.read().split()[:2])
        if not state:
            return ThreadTimes(ran, waited)
        with open(f"{task}/stat", "rb") as stat:  # "pid (comm) S ...": comm may hold spaces
            runnable = stat.read().rpartition(b")")[2].split()[0] == b"R"
        return ThreadTimes(ran, waited, runnable)
    except (OSError, IndexError, ValueError):
        return None


def starved(
    start: ThreadTimes | None, now: ThreadTimes | None, elapsed: float, share: float
) -> bool:
    """Whether a worker waited on the run queue ``share`` of the ``elapsed`` call time.

    A thread still waiting at ``now`` (``now.runnable``) has that wait in no counter yet,
    so its time neither run nor counted as waited since ``start`` counts as waited (it
    may include sleeps earlier in the call: an overestimate, for a call that is
    runnable when its deadline passes, which :data:`MAX_EXTENSIONS` bounds).

    Args:
        start: The worker's times when its call started.
        now: Its times now (with ``runnable``).
        elapsed: Wall seconds since the call started.
        share: The least share of ``elapsed`` spent waiting that counts as starved.

    Returns:
        False when either reading is unknown (the rule is off) or no time has passed.
    """
    if start is None or now is None or elapsed <= 0:
        return False
    waited = now.waited - start.waited
    if now.runnable:
        waited = max(waited, elapsed - (now.ran - start.ran))
    return waited >= share * elapsed


@dataclass
class GuardStats:
    """A guard's counts since start (monotonic; read under the guard's lock)."""

    #: Requests answered and the items they asked for.
    requests: int = 0
    items: int = 0
    #: Store calls made and the distinct items they carried.
    calls: int = 0
    call_items: int = 0
    #: Finished store calls (answered or raised) per :data:`READ_BUCKETS` bound (not
    #: cumulative; the last entry counts those above every bound), and their total time.
    call_buckets: list[int] = field(default_factory=lambda: [0] * (len(READ_BUCKETS) + 1))
    call_seconds: float = 0.0
    #: Failed store calls by reason: ``timeout``, ``error``.
    failures: dict[str, int] = field(default_factory=lambda: {"timeout": 0, "error": 0})
    #: Requests, and their items, answered from the fallback by reason: ``store_failed``,
    #: ``breaker_open``, ``no_worker`` (no worker free within the queue bound; never a
    #: breaker failure).
    fallbacks: dict[str, int] = field(
        default_factory=lambda: {"store_failed": 0, "breaker_open": 0, "no_worker": 0}
    )
    fallback_items: dict[str, int] = field(
        default_factory=lambda: {"store_failed": 0, "breaker_open": 0, "no_worker": 0}
    )
    #: Further periods given to calls past their deadline, by rule (:data:`EXTENSION_RULES`).
    extensions: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EXTENSION_RULES, 0))


@dataclass(frozen=True)
class Outcome(Generic[Answer]):
    """A request's answers from the store, or None and why the fallback answers."""

    answers: list[Answer] | None
    reason: str | None = None


@dataclass(frozen=True)
class GuardNames:
    """How a guard names itself in its log lines and threads."""

    #: The store, as log lines start: ``feature store``.
    store: str
    #: What one item is, plural, in the timeout's reason: ``entities``.
    items: str
    #: The worker threads' name.
    thread: str


class Ticket(Generic[Item, Answer]):
    """One request handed to :meth:`CoalescingGuard.submit`, waiting for its call."""

    def __init__(self, items: list[Item]) -> None:
        self.items = items
        self.batch: _Batch[Item, Answer] | None = None
        #: Set when a worker took the request (or it was settled without one).
        self.started = threading.Event()
        self.done = threading.Event()
        self.answers: list[Answer] | None = None
        #: Why the fallback answered (None: the store did).
        self.reason: str | None = None


class _Batch(Generic[Item, Answer]):
    """Requests answered by one store call; its outcome is settled exactly once."""

    def __init__(self, tickets: list[Ticket[Item, Answer]], limit: float, tid: int) -> None:
        self.tickets = tickets
        self.started = time.perf_counter()
        #: The call's time limit in seconds; ``deadline`` is its start plus this.
        self.limit = limit
        self.deadline = self.started + limit
        #: The process's CPU time when the call started (see :data:`SATURATED_SHARE`).
        self.cpu_started = time.process_time()
        #: The worker's native thread id and its scheduler times at the start (see
        #: :data:`STARVED_SHARE`).
        self.tid = tid
        self.times_started: ThreadTimes | None = None
        self._lock = threading.Lock()
        self.settled = False
        #: The call ran past its deadline (its worker is being replaced).
        self.expired = False

    def settle(self, *, expire: bool = False) -> bool:
        """Claim the right to settle the outcome (False when already settled).

        ``expire`` marks the call as past its deadline in the same step, so the worker
        that loses the race to settle always sees that it was replaced.
        """
        with self._lock:
            if self.settled:
                return False
            self.settled, self.expired = True, expire
            return True


class CoalescingGuard(Generic[Item, Answer]):
    """A store call behind coalescing workers, a fair timeout and a breaker.

    Args:
        call: The store call: one answer per item, in order, for distinct items.
        key: What makes two items the same (asked once per call); the item by default.
        names: How log lines and threads name the guard.
        logger: Where its log lines go (the specialisation's module logger).
        timeout_seconds: Longest a store call of one item may take, from its start.
        per_item_seconds: Added to the limit for each further distinct item in the call.
        breaker: Opened by consecutive failed store calls.
        workers: Threads calling the store; each takes everything pending.
        queue_seconds: Longest a request waits for a free worker. Past it the request is
            answered from the fallback (``no_worker``, not a store failure); it only
            happens when every worker is stuck in a call, since a free worker takes all
            pending requests at once.
        max_items: Most distinct items in one store call (whole requests are never
            split, so one larger request still goes alone).
        max_abandoned: Most worker threads left behind in calls past their deadline
            (each is replaced, so a hung store still gets trial calls); beyond it no
            replacement is started until one returns.
        thread_clock: Reads a worker thread's scheduler times (:func:`thread_times`);
            tests pass their own readings.
    """

    def __init__(
        self,
        call: Callable[[list[Item]], Sequence[Answer]],
        *,
        names: GuardNames,
        logger: logging.Logger,
        timeout_seconds: float,
        breaker: Breaker,
        key: Callable[[Item], Hashable] = lambda item: item,
        per_item_seconds: float = 0.0,
        workers: int = 1,
        queue_seconds: float = 1.0,
        max_items: int = 1024,
        max_abandoned: int = 16,
        thread_clock: ThreadClock = thread_times,
    ) -> None:
        """Wrap ``call``; worker threads start with the first request."""
        self._call_store = call
        self._key = key
        self._names = names
        self._log = logger
        self._timeout = timeout_seconds
        self._per_item = per_item_seconds
        #: A waiter woken this much after the deadline saw a stall of the process.
        self._stall_seconds = max(0.002, timeout_seconds / 5.0)
        self._queue_seconds = queue_seconds
        self._max_items = max_items
        self._max_abandoned = max_abandoned
        self._workers = workers
        self._thread_clock = thread_clock
        self.breaker = breaker
        self._stats = GuardStats()
        self._cond = threading.Condition()
        self._pending: deque[Ticket[Item, Answer]] = deque()
        self._live = 0  # workers not abandoned in a call past their deadline
        self._abandoned = 0
        self._closed = False

    @property
    def queued(self) -> int:
        """Requests waiting for a free worker now."""
        with self._cond:
            return len(self._pending)

    def stats(self) -> GuardStats:
        """A consistent copy of the counts."""
        with self._cond:
            return copy.deepcopy(self._stats)

    # The caller's side ---------------------------------------------------------------

    def ask(self, items: Sequence[Item]) -> Outcome[Answer]:
        """The store's answers for ``items``, or the reason they fall back."""
        return self.wait(self.submit(items))

    def submit(self, items: Sequence[Item]) -> Ticket[Item, Answer]:
        """Hand ``items`` to the workers without waiting (see :meth:`wait`)."""
        ticket: Ticket[Item, Answer] = Ticket(list(items))
        if not ticket.items:
            ticket.answers = []
            ticket.started.set()
            ticket.done.set()
        elif self.breaker.state == "open":  # no call would be allowed: do not queue
            self._resolve_fallback([ticket], "breaker_open")
        elif self._closed:  # shutting down: no worker will take it
            self._resolve_fallback([ticket], "no_worker")
        else:
            with self._cond:
                self._pending.append(ticket)
                self._start_workers()
                self._cond.notify()
        return ticket

    def wait(self, ticket: Ticket[Item, Answer]) -> Outcome[Answer]:
        """Wait for ``ticket``'s call (bounded as the module says) and count it."""
        if not ticket.done.is_set():
            self._wait(ticket)
        ticket.done.wait()
        with self._cond:
            self._stats.requests += 1
            self._stats.items += len(ticket.items)
        return Outcome(ticket.answers if ticket.reason is None else None, ticket.reason)

    def _wait(self, ticket: Ticket[Item, Answer]) -> None:
        """Wait for a worker to start the call, then at most its limit (extended)."""
        if not ticket.started.wait(self._queue_seconds) and self._withdraw(ticket):
            self._log.warning(
                "no %s worker free within %.0f ms (%d workers busy in store calls); "
                "answered from the fallback",
                self._names.store,
                self._queue_seconds * 1000.0,
                self._workers,
            )
            self._resolve_fallback([ticket], "no_worker")
            return
        ticket.started.wait()  # set before anything is settled (also by the fallback)
        batch = ticket.batch
        if batch is None:  # settled without a call (the fallback)
            return
        deadline, extensions = batch.deadline, 0
        while not ticket.done.wait(max(0.0, deadline - time.perf_counter())):
            now = time.perf_counter()
            rule = self._excuse(batch, deadline, now) if extensions < MAX_EXTENSIONS else None
            if rule is None:
                self._expire(batch)
                return
            deadline, extensions = now + batch.limit, extensions + 1
            with self._cond:
                self._stats.extensions[rule] += 1

    def _excuse(self, batch: _Batch[Item, Answer], deadline: float, now: float) -> str | None:
        """The rule that excuses a call past ``deadline`` (None: it is the store's fault)."""
        if now - deadline >= self._stall_seconds:
            return "stall"
        elapsed = now - batch.started
        if elapsed > 0 and time.process_time() - batch.cpu_started >= SATURATED_SHARE * elapsed:
            return "saturated"
        now_times = self._thread_clock(batch.tid, state=True)
        if starved(batch.times_started, now_times, elapsed, STARVED_SHARE):
            return "starved"
        return None

    def _withdraw(self, ticket: Ticket[Item, Answer]) -> bool:
        """Take a request that no worker started off the queue (False if one did)."""
        with self._cond:
            try:
                self._pending.remove(ticket)
            except ValueError:
                return False
            return True

    # The workers' side ---------------------------------------------------------------

    def _start_workers(self) -> None:
        """Keep ``workers`` live threads (lock held); abandoned ones are replaced."""
        while (
            not self._closed
            and self._live < self._workers
            and self._abandoned + self._live < self._workers + self._max_abandoned
        ):
            self._live += 1
            threading.Thread(target=self._work, name=self._names.thread, daemon=True).start()

    def _work(self) -> None:
        """Take everything pending and answer it with one store call, until closed."""
        tid = threading.get_native_id()
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if self._closed:
                    self._live -= 1
                    return
                tickets = self._take()
            batch = self._call(tickets, tid)
            if batch is not None and batch.expired:
                with self._cond:  # replaced when the call expired: leave
                    self._abandoned -= 1
                    self._start_workers()
                return

    def _take(self) -> list[Ticket[Item, Answer]]:
        """Whole pending requests up to ``max_items`` distinct items (lock held)."""
        taken = [self._pending.popleft()]
        seen = {self._key(item) for item in taken[0].items}
        while self._pending:
            more = {self._key(item) for item in self._pending[0].items} - seen
            if len(seen) + len(more) > self._max_items:
                break
            seen |= more
            taken.append(self._pending.popleft())
        return taken

    def _call(self, tickets: list[Ticket[Item, Answer]], tid: int) -> _Batch[Item, Answer] | None:
        """One store call for ``tickets`` (None when the breaker allowed none)."""
        distinct = list({self._key(i): i for t in tickets for i in t.items}.values())
        batch = _Batch(tickets, self._timeout + self._per_item * (len(distinct) - 1), tid)
        batch.times_started = self._thread_clock(tid)
        for ticket in tickets:
            ticket.batch = batch
            ticket.started.set()
        if not self.breaker.allow():
            if batch.settle():
                self._resolve_fallback(tickets, "breaker_open")
            return None
        with self._cond:
            self._stats.calls += 1
            self._stats.call_items += len(distinct)
        try:
            try:
                answers = list(self._call_store(distinct))
            finally:
                self._observe(time.perf_counter() - batch.started)
            if len(answers) != len(distinct):
                raise ValueError(f"{len(answers)} answers for {len(distinct)} items")
        except Exception as error:  # any store failure degrades, never fails the request
            elapsed = (time.perf_counter() - batch.started) * 1000.0
            if batch.settle():
                self._failed(
                    batch, "error", f"{type(error).__name__} after {elapsed:.1f} ms: {error}"
                )
            return batch
        if batch.settle():
            self.breaker.record_success()
            found = {self._key(i): a for i, a in zip(distinct, answers, strict=True)}
            for ticket in tickets:
                ticket.answers = [found[self._key(i)] for i in ticket.items]
                ticket.done.set()
        return batch

    def _observe(self, seconds: float) -> None:
        """Count a finished store call's duration in the histogram."""
        bucket = next((i for i, bound in enumerate(READ_BUCKETS) if seconds <= bound), -1)
        with self._cond:
            self._stats.call_buckets[bucket] += 1
            self._stats.call_seconds += seconds

    def _expire(self, batch: _Batch[Item, Answer]) -> None:
        """A caller saw ``batch``'s deadline pass: fail it once and replace its worker."""
        if not batch.settle(expire=True):
            return
        elapsed = (time.perf_counter() - batch.started) * 1000.0
        with self._cond:
            self._live -= 1
            self._abandoned += 1
            self._start_workers()
        items = len({self._key(i) for t in batch.tickets for i in t.items})
        self._failed(
            batch,
            "timeout",
            f"TimeoutError: no answer after {elapsed:.1f} ms "
            f"(limit {batch.limit * 1000.0:.0f} ms, {items} {self._names.items})",
        )

    def _failed(self, batch: _Batch[Item, Answer], kind: str, reason: str) -> None:
        """Count and log a failed store call, then answer its requests from the fallback."""
        self._log.warning("%s call failed: %s", self._names.store, reason)
        with self._cond:
            self._stats.failures[kind] += 1
        self.breaker.record_failure(reason)
        self._resolve_fallback(batch.tickets, "store_failed")

    def _resolve_fallback(self, tickets: list[Ticket[Item, Answer]], reason: str) -> None:
        """Answer ``tickets`` with the fallback for ``reason``."""
        with self._cond:
            self._stats.fallbacks[reason] += len(tickets)
            self._stats.fallback_items[reason] += sum(len(t.items) for t in tickets)
        for ticket in tickets:
            ticket.reason = reason
            ticket.started.set()  # a waiter still waiting for a worker sees it settled
            ticket.done.set()

    def close(self) -> None:
        """Stop the workers and answer what is pending with the fallback (``no_worker``).

        A call still hanging is not waited for.
        """
        with self._cond:
            self._closed = True
            pending, self._pending = list(self._pending), deque()
            self._cond.notify_all()
        if pending:
            self._resolve_fallback(pending, "no_worker")
