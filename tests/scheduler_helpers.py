"""A fake loop and a fake-clock driver for the scheduler's tests.

The scheduler runs on a :class:`~canaryd.testing.FakeLoopClock`: time moves only
when a test moves it, from timer to timer (:func:`advance`), and after each move the
test waits until every task is blocked again (:func:`settle`) before it looks. So
due times, starts and ends are exact, and "nothing happened" means nothing could
happen, not that nothing happened yet. A :class:`FakeRunner` records, for each tick,
the clock at its start and end and the ``next_at`` the scheduler set before it; a
tick can be made to last (``durations``, on the fake clock), to block until an event
is set (``gate``), to raise, or to take a few turns of the event loop to clean up
when cancelled. One test runs the scheduler on the event loop's own clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import anyio
import pytest

from canaryd.service.scheduler import Scheduler
from canaryd.testing import FakeLoopClock

WAIT = 5.0
"""Real seconds a test waits at most for the event loop to do what it should."""

FAR = 3600.0
"""A delay or interval beyond any test's horizon: a tick due this far ahead must not happen."""


@dataclass(eq=False)
class FakeRunner:
    """A loop that records its ticks; a tick can last, block, raise or clean up slowly."""

    key: str
    interval: float
    clock: FakeLoopClock
    next_at: float = 0.0
    durations: list[float] = field(default_factory=list)
    """Seconds (on the fake clock) tick k lasts (0 beyond the list)."""
    gate: asyncio.Event | None = None
    """If set, each tick waits for this event (after its duration)."""
    error: Exception | None = None
    """Raised at the end of each tick, as a buggy ``safe_tick`` would."""
    cleanup: int = 0
    """Turns of the event loop a cancelled tick takes before it lets the cancellation through."""
    on_start: Callable[[], None] | None = None
    """Called as each tick starts."""
    starts: list[float] = field(default_factory=list)
    dues: list[float] = field(default_factory=list)
    """``next_at`` as the scheduler left it when each tick started."""
    ends: list[float] = field(default_factory=list)
    """When each tick that was not cancelled ended."""
    cancelled: int = 0
    active: int = 0
    most_active: int = 0

    async def safe_tick(self) -> None:
        """Record the tick; last, block, clean up when cancelled, or raise, as configured."""
        tick = len(self.starts)
        self.starts.append(self.clock.now)
        self.dues.append(self.next_at)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        if self.on_start is not None:
            self.on_start()
        try:
            duration = self.durations[tick] if tick < len(self.durations) else 0.0
            if duration:
                await self.clock.sleep(duration)
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            for _ in range(self.cleanup):  # the task was cancelled once; this runs
                await asyncio.sleep(0)
            raise
        finally:
            self.active -= 1
        self.ends.append(self.clock.now)
        if self.error is not None:
            raise self.error


def is_blocked(task: asyncio.Task[Any]) -> bool:
    """Whether a task waits on a future not yet done (asyncio keeps it in ``_fut_waiter``;
    anyio's ``wait_all_tasks_blocked`` reads it the same way, then sleeps 0.1 s)."""
    waiter = task._fut_waiter  # type: ignore[attr-defined]
    return waiter is not None and not waiter.done()


async def settle() -> None:
    """Return once every other task waits on something (a fake timer, a gate) twice running.

    Twice: a callback queued before the first look (a task's done callback, a future
    resolved) runs before the second and would wake a task.
    """
    me = asyncio.current_task()
    quiet = 0
    with anyio.fail_after(WAIT):
        while quiet < 2:
            await asyncio.sleep(0)
            still = all(task is me or is_blocked(task) for task in asyncio.all_tasks())
            quiet = quiet + 1 if still else 0


async def advance(clock: FakeLoopClock, seconds: float) -> None:
    """Move the clock ``seconds`` on, timer by timer, letting what each wakes run before the
    next (as a loop that keeps up would)."""
    target = clock.now + seconds
    await settle()
    while (when := clock.next_timer()) is not None and when <= target:
        clock.advance(when - clock.now)
        await settle()
    clock.advance(target - clock.now)
    await settle()


async def advance_until(
    clock: FakeLoopClock, predicate: Callable[[], object], horizon: float = 100.0
) -> None:
    """Move the clock timer by timer until ``predicate()`` holds; fail past ``horizon`` s."""
    end = clock.now + horizon
    await settle()
    while not predicate():
        when = clock.next_timer()
        assert when is not None and when <= end, "the scheduler has nothing more to do"
        clock.advance(when - clock.now)
        await settle()


@asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[Scheduler]:
    """Run ``scheduler`` in a task group for the block; cancel it at the end."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run)
        await settle()  # run() reaches its first wait
        yield scheduler
        tg.cancel_scope.cancel()


def slots(earlier: float, later: float, interval: float) -> int:
    """How many intervals lie between two due times, which must be on one grid."""
    steps = (later - earlier) / interval
    assert abs(steps - round(steps)) < 1e-6, f"{later} is off the grid of {earlier}"
    return round(steps)


def assert_on_cadence(runner: FakeRunner) -> None:
    """Each tick started at its due time, due times one grid, no overlap."""
    assert runner.most_active == 1
    assert runner.starts == pytest.approx(runner.dues)
    for start, end in zip(runner.starts[1:], runner.ends, strict=False):
        assert start >= end
    for earlier, later in pairwise(runner.dues):
        assert slots(earlier, later, runner.interval) >= 1
