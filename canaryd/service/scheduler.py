"""One task that ticks every canary's loop on its cadence.

Each canary's analysis loop is an entry with a due time in a heap, not a task
of its own: a waiting loop costs no task, coroutine frame, timer or cancel
scope (about 3 KiB per canary at 10,000 canaries), and the event loop keeps
one timer instead of one per canary. When an entry is due its tick runs in a
task of its own; when the tick ends the entry is due again one interval after
the slot it ran for (slots the tick overran are skipped, so the cadence holds).
A canary's ticks never overlap, not even when its loop is replaced (a reload
removes and adds it again) while a tick is in flight: the new loop's first
tick waits for the old one's.

At most :data:`MAX_TICKING` ticks run at once. When more are due (canaryd is
overloaded: more checks per second than it, its connections or its event loop can
carry) the others wait in the heap in order of their due time: no canary starves,
every interval stretches by the same lag, and the lag is measured
(:meth:`Scheduler.lag`) instead of piling up as queries that canaryd would then
fail to send in time (docs/reliability.md, "Overload is visible and fair").

Stopping is graceful: :meth:`Scheduler.stop` starts no new tick, lets the ticks
in flight finish within a grace period and only then cancels ("abandons")
them. A tick is cancelled at no other time (removing a canary lets its tick in
flight finish), and cancelling :meth:`Scheduler.run` from outside abandons the
ticks at once.

Time is read from a :class:`Clock`: the running event loop's own (``time()`` and
``call_at()``), used as it is so that a tick costs no extra call, or a fake that a
test moves by hand (:class:`canaryd.testing.FakeLoopClock`), so that cadence,
overload and grace periods are tested without waiting for them.
"""

from __future__ import annotations

import asyncio
import heapq
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import anyio
import structlog

log = structlog.get_logger()

MAX_TICKING = 512
"""Ticks in flight at most (twice a provider's connection pool, see canaryd/http.py):
more would only queue for a connection inside the ticks, where the wait eats their
deadline, instead of in the heap, where it is fair and measured."""

EARLY_SECONDS = 0.001
"""An entry due within this much of now starts now. uvloop's clock and timers count
whole milliseconds: a timer less than half a millisecond away fires at once and the
clock still reads the same millisecond, so waiting for an entry due within it would
spin the event loop (one empty turn after another) until the millisecond passed.
That spin cost a sixth of canaryd's CPU at 1,000 canaries (benchmarks/README.md,
"Round 6"); starting a tick up to 1 ms early costs nothing."""

LAG_WINDOW_SECONDS = 10.0
""":meth:`Scheduler.lag` looks at the ticks started in the last one or two such windows."""

LAG_QUANTILE = 0.9
""":meth:`Scheduler.lag` is this quantile of their start lags: one stall of the event loop
(a long garbage collection, a busy machine) makes a few ticks late, not the scheduler."""


class Timer(Protocol):
    """A callback :meth:`Clock.call_at` will call (an :class:`asyncio.TimerHandle`)."""

    def cancel(self) -> None:
        """Do not call it (a no-op once called)."""
        ...


class Clock(Protocol):
    """What the scheduler reads time from: the event loop (its default) or a fake."""

    def time(self) -> float:
        """Now, in seconds on a monotonic clock."""
        ...

    def call_at(
        self,
        when: float,
        callback: Callable[[asyncio.Future[None]], object],
        arg: asyncio.Future[None],
        /,
    ) -> Timer:
        """Call ``callback(arg)`` once the clock reaches ``when``."""
        ...


class Tickable(Protocol):
    """What the scheduler drives: a runner (see :class:`canaryd.service.runtime.CanaryRunner`)."""

    next_at: float
    """When the next tick is due (the scheduler's clock); kept up to date by the scheduler."""

    @property
    def key(self) -> str:
        """Unique name of the loop (``namespace/name``)."""
        ...

    @property
    def interval(self) -> float:
        """Seconds between ticks."""
        ...

    async def safe_tick(self) -> None:
        """One tick; never raises but ``CancelledError``."""
        ...


@dataclass(eq=False, slots=True)
class _Entry:
    runner: Tickable
    due: float
    ticking: asyncio.Task[None] | None = None
    woken: bool = False
    removed: bool = False
    held: bool = False
    """Waiting for the tick in flight of the entry it replaced (one key never ticks twice)."""
    successor: _Entry | None = None
    """The entry that replaced this one while it ticked: scheduled once this tick ends."""
    started: bool = False
    """Has ticked before: a first tick's lateness is start-up time (spread, not lag)."""


@dataclass(eq=False)
class Scheduler:
    """Ticks many loops from one task; see the module docstring.

    Args:
        clock: where time is read from; None: the running event loop.
        max_ticking: ticks in flight at most.
    """

    clock: Clock | None = None
    _entries: dict[str, _Entry] = field(default_factory=dict)
    _heap: list[tuple[float, int, _Entry]] = field(default_factory=list)
    _seq: int = 0  # tie-breaker: entries are never compared
    _ticks: set[asyncio.Task[None]] = field(default_factory=set)
    _alarm: asyncio.Future[None] | None = None
    _stopping: bool = False
    max_ticking: int = MAX_TICKING
    _lags: list[float] = field(default_factory=list)  # start lags since _lag_since
    _lag_since: float = 0.0
    _lags_before: list[float] = field(default_factory=list)  # of the window before

    def add(self, runner: Tickable, first_delay: float) -> Callable[[], None]:
        """Schedule a runner's first tick ``first_delay`` seconds from now.

        Returns:
            A function that makes the runner tick now (or right after its tick in flight).
        """
        entry = _Entry(runner, self.now() + first_delay)
        old = self._entries.get(runner.key)
        self.remove(runner.key)
        self._entries[runner.key] = entry
        if old is not None and old.ticking is not None:
            entry.held, old.successor = True, entry
        else:
            self._push(entry)
        return lambda: self._wake(entry)

    def remove(self, key: str) -> bool:
        """Stop ticking a loop; a tick in flight finishes. Returns whether it was scheduled."""
        entry = self._entries.pop(key, None)
        if entry is not None:
            entry.removed = True
        return entry is not None

    def now(self) -> float:
        """The scheduler's clock: due times, :meth:`lag` and :meth:`queued` are on it."""
        return self._clock().time()

    def _clock(self) -> Clock:
        return asyncio.get_running_loop() if self.clock is None else self.clock

    @property
    def ticking(self) -> int:
        """Ticks in flight."""
        return len(self._ticks)

    def lag(self, now: float) -> float:
        """How far behind schedule ticks start, in seconds (0 when on time).

        :data:`LAG_QUANTILE` of the start lags of the ticks started in the last
        :data:`LAG_WINDOW_SECONDS` or so (a loop's first tick is spread over its
        interval on purpose and does not count), or how long the most overdue
        waiting entry has waited, if longer.

        Args:
            now: the scheduler's clock (:meth:`now`).
        """
        self._roll_lag(now)
        lags = sorted(self._lags + self._lags_before)
        quantile = lags[min(len(lags) - 1, int(len(lags) * LAG_QUANTILE))] if lags else 0.0
        overdue = now - self._heap[0][0] if self._heap and not self._stopping else 0.0
        return max(quantile, overdue, 0.0)

    def queued(self, key: str, now: float) -> bool:
        """Whether ``key``'s tick is due and waits for a free slot (not ticking, not stalled)."""
        entry = self._entries.get(key)
        return entry is not None and entry.ticking is None and entry.due <= now

    def overdue(self, now: float) -> int:
        """Entries due by ``now`` that have not started (O(n): for reports, not per tick)."""
        return sum(1 for e in self._entries.values() if e.ticking is None and e.due <= now)

    def _roll_lag(self, now: float) -> None:
        if now - self._lag_since >= LAG_WINDOW_SECONDS:
            recent = now - self._lag_since < 2 * LAG_WINDOW_SECONDS
            self._lags_before = self._lags if recent else []
            self._lags, self._lag_since = [], now

    def _wake(self, entry: _Entry) -> None:
        if entry.removed:
            return
        if entry.ticking is not None or entry.held:
            entry.woken = True  # tick again as soon as this one ends
            return
        entry.due = self._clock().time()
        self._push(entry)

    def _push(self, entry: _Entry) -> None:
        """(Re)insert an entry at its due time; older heap items of it become stale."""
        entry.runner.next_at = entry.due
        self._seq += 1
        heapq.heappush(self._heap, (entry.due, self._seq, entry))
        if self._heap[0][2] is entry and self._alarm is not None and not self._alarm.done():
            self._alarm.set_result(None)  # due before what run() sleeps for

    async def run(self) -> None:
        """Start ticks as they fall due until cancelled; then abandon the ticks in flight."""
        loop = asyncio.get_running_loop()
        clock = self._clock()
        heap = self._heap
        try:
            while True:
                now = clock.time()
                free = self.max_ticking - len(self._ticks)
                soon = now + EARLY_SECONDS
                while heap and heap[0][0] <= soon and not self._stopping and free > 0:
                    due, _, entry = heapq.heappop(heap)
                    if entry.removed or entry.ticking is not None or entry.due != due:
                        continue  # stale: removed, rescheduled by a wake-up, or ticking
                    self._start(entry, loop, now)
                    free -= 1
                idle = self._stopping or not heap or free <= 0  # full: a tick's end wakes us
                await self._sleep(loop, clock, None if idle else heap[0][0])
        finally:
            with anyio.CancelScope(shield=True):
                await self._abandon_all()

    def _start(self, entry: _Entry, loop: asyncio.AbstractEventLoop, now: float) -> None:
        if entry.started:
            self._roll_lag(now)
            self._lags.append(max(now - entry.due, 0.0))  # started early: on time
        entry.started = True
        task = loop.create_task(self._tick(entry))
        entry.ticking = task
        self._ticks.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        """A tick is over: its slot is free (wake :meth:`run` if it waits for one)."""
        full = len(self._ticks) >= self.max_ticking
        self._ticks.discard(task)
        if full and self._alarm is not None and not self._alarm.done():
            self._alarm.set_result(None)

    async def _tick(self, entry: _Entry) -> None:
        runner = entry.runner
        try:
            await runner.safe_tick()
        except Exception:  # safe_tick does not raise; if it does, say so and keep the loop
            log.exception("tick.crashed", key=runner.key)
        finally:
            entry.ticking = None
            if not entry.removed:
                now = self._clock().time()
                if entry.woken:
                    entry.woken, entry.due = False, now
                else:
                    interval = runner.interval
                    entry.due += interval
                    if entry.due <= now:  # overran: skip the missed slots, keep the cadence
                        entry.due += math.ceil((now - entry.due) / interval) * interval
                self._push(entry)
            elif (successor := entry.successor) is not None and not successor.removed:
                successor.held = False  # the key's old tick is over: its new loop may start
                now = self._clock().time()
                successor.due = now if successor.woken else max(successor.due, now)
                successor.woken = False
                self._push(successor)

    async def _sleep(
        self, loop: asyncio.AbstractEventLoop, clock: Clock, until: float | None
    ) -> None:
        """Wait until ``until`` (forever with None), or until an earlier entry is pushed."""
        alarm = self._alarm = loop.create_future()
        timer = None if until is None else clock.call_at(until, _ring, alarm)
        try:
            await alarm
        finally:
            if timer is not None:
                timer.cancel()
            self._alarm = None

    async def stop(self, grace: float) -> int:
        """Start no more ticks; wait up to ``grace`` s for those in flight, then abandon them.

        Both waits (for the ticks to end, then for the abandoned ones to finish
        cancelling) are on the scheduler's clock and last ``grace`` at most.

        Returns:
            How many ticks were abandoned.
        """
        self._stopping = True
        pending = await self._wait(self._ticks, grace)
        if not pending:
            return 0
        for task in pending:
            task.cancel()
        await self._wait(pending, grace)
        return len(pending)

    async def _wait(
        self, tasks: Iterable[asyncio.Task[None]], timeout: float
    ) -> set[asyncio.Task[None]]:
        """Wait until every task has ended or ``timeout`` s have passed on the clock.

        Returns:
            The tasks still running.
        """
        running = {task for task in tasks if not task.done()}
        if not running:
            return running
        clock = self._clock()
        alarm = asyncio.get_running_loop().create_future()
        left = set(running)

        def ended(task: asyncio.Task[None]) -> None:
            left.discard(task)
            if not left:
                _ring(alarm)

        for task in running:
            task.add_done_callback(ended)
        timer = clock.call_at(clock.time() + timeout, _ring, alarm)
        try:
            await alarm
        finally:
            timer.cancel()
            for task in running:
                task.remove_done_callback(ended)
        return {task for task in running if not task.done()}

    async def _abandon_all(self) -> None:
        ticks = set(self._ticks)
        for task in ticks:
            task.cancel()
        if ticks:
            await asyncio.wait(ticks)


def _ring(alarm: asyncio.Future[None]) -> None:
    """Resolve an alarm (unless something else did first)."""
    if not alarm.done():
        alarm.set_result(None)
