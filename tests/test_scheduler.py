"""The scheduler at its seam: fake loops (``Tickable``) that record when they tick.

A :class:`FakeRunner` records, for each tick, the event loop's clock at its start
and end and the ``next_at`` the scheduler set before it; a tick can be made to
last (``durations``), to block until an event is set (``gate``), to raise, or to
take a while to clean up when cancelled. The scheduler runs on the real clock
with intervals of 0.02-0.1 s, so the assertions are about order, the grid of due
times (exact: the scheduler computes it) and counts within windows, not about
how late a busy machine starts a tick.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from statistics import median
from typing import Any

import anyio
import anyio.lowlevel
import pytest
import structlog

from canaryd.service.scheduler import Scheduler

pytestmark = pytest.mark.anyio

WAIT = 3.0
"""Seconds a test waits at most for something the scheduler should do."""

EARLY = 0.002
"""A tick may start this much before its due time (timer rounding), and no more."""

FAR = 30.0
"""A delay or interval no test lasts: a tick due this far ahead must not happen."""


@dataclass(eq=False)
class FakeRunner:
    """A loop that records its ticks; a tick can last, block, raise or clean up slowly."""

    key: str
    interval: float
    next_at: float = 0.0
    durations: list[float] = field(default_factory=list)
    """Seconds tick k lasts (0 beyond the list)."""
    gate: anyio.Event | None = None
    """If set, each tick waits for this event (after its duration)."""
    error: Exception | None = None
    """Raised at the end of each tick, as a buggy ``safe_tick`` would."""
    cleanup: float = 0.0
    """Seconds a cancelled tick takes before it lets the cancellation through."""
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
        loop = asyncio.get_running_loop()
        tick = len(self.starts)
        self.starts.append(loop.time())
        self.dues.append(self.next_at)
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await anyio.sleep(self.durations[tick] if tick < len(self.durations) else 0.0)
            if self.gate is not None:
                await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            await asyncio.sleep(self.cleanup)  # the task was cancelled once; this runs
            raise
        finally:
            self.active -= 1
        self.ends.append(loop.time())
        if self.error is not None:
            raise self.error


@asynccontextmanager
async def running(scheduler: Scheduler) -> AsyncIterator[Scheduler]:
    """Run ``scheduler`` in a task group for the block; cancel it at the end."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(scheduler.run)
        await anyio.lowlevel.checkpoint()  # run() reaches its first wait
        yield scheduler
        tg.cancel_scope.cancel()


async def until(predicate: Callable[[], object], timeout: float = WAIT) -> None:
    """Wait until ``predicate()`` is true; fail after ``timeout`` seconds."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 (the scheduler and the fakes have no events)
            await anyio.sleep(0.005)


def slots(earlier: float, later: float, interval: float) -> int:
    """How many intervals lie between two due times, which must be on one grid."""
    steps = (later - earlier) / interval
    assert abs(steps - round(steps)) < 1e-6, f"{later} is off the grid of {earlier}"
    return round(steps)


def assert_on_cadence(runner: FakeRunner) -> None:
    """Each tick started at (not before) its due time, due times one grid, no overlap."""
    assert runner.most_active == 1
    for due, start in zip(runner.dues, runner.starts, strict=True):
        assert start >= due - EARLY
    for start, end in zip(runner.starts[1:], runner.ends, strict=False):
        assert start >= end
    for earlier, later in pairwise(runner.dues):
        assert slots(earlier, later, runner.interval) >= 1


# --------------------------------------------------------------------------- cadence


async def test_first_tick_after_first_delay_then_every_interval() -> None:
    """A loop ticks first ``first_delay`` after it was added, then once per interval on a grid."""
    interval, delay = 0.05, 0.1
    runner = FakeRunner("ns/a", interval)
    async with running(Scheduler()) as scheduler:
        added = anyio.current_time()
        scheduler.add(runner, delay)
        assert runner.next_at == pytest.approx(added + delay, abs=0.01)
        await until(lambda: len(runner.starts) >= 8)
    assert runner.dues[0] == pytest.approx(added + delay, abs=0.01)
    assert_on_cadence(runner)
    grid = [slots(runner.dues[0], due, interval) for due in runner.dues]
    assert grid[-1] <= len(grid)  # at most one slot lost to a stalled machine
    lateness = [start - due for start, due in zip(runner.starts, runner.dues, strict=True)]
    assert median(lateness) < interval / 2
    # after the last tick, next_at is the next slot (set before that slot's tick starts)
    assert slots(runner.dues[-1], runner.next_at, interval) >= 1


async def test_many_loops_tick_about_once_per_interval_from_one_task() -> None:
    """200 loops each tick about once per interval, and waiting loops hold no task of their own."""
    interval, n, window = 0.1, 200, 5
    runners = [FakeRunner(f"ns/c{i}", interval) for i in range(n)]
    scheduler = Scheduler()
    baseline = len(asyncio.all_tasks())
    async with running(scheduler):
        for i, runner in enumerate(runners):
            scheduler.add(runner, interval * i / n)
        await anyio.sleep(window * interval)  # the window the ticks are counted in
        assert await scheduler.stop(grace=WAIT) == 0
        assert len(asyncio.all_tasks()) == baseline + 1  # run() alone
    counts = sorted(len(r.starts) for r in runners)
    assert counts[0] >= window - 2  # every loop ticked, about once per interval
    assert counts[-1] <= window + 1  # and never ahead of its cadence
    assert sum(counts) >= 0.8 * window * n
    for runner in runners:
        assert_on_cadence(runner)


@pytest.mark.parametrize(
    "durations",
    [[0.2], [0.2, 0.2, 0.2]],
    ids=["first_tick_overruns", "every_tick_overruns"],
)
async def test_overrunning_tick_skips_missed_slots(durations: list[float]) -> None:
    """After a tick of 2.5 intervals the next starts on the first slot after it, not in a burst."""
    interval = 0.08
    runner = FakeRunner("ns/slow", interval, durations=durations)
    async with running(Scheduler()) as scheduler:
        scheduler.add(runner, 0.0)
        await until(lambda: len(runner.ends) >= 5)
    assert_on_cadence(runner)  # includes: ticks never overlap
    for end, next_due in zip(runner.ends, runner.dues[1:], strict=False):
        assert end <= next_due < end + interval + EARLY  # the first slot after the tick ended
    for k, (earlier, later) in enumerate(pairwise(runner.dues)):
        if k < len(durations):
            assert slots(earlier, later, interval) >= 3  # two slots and more skipped


# --------------------------------------------------------------------------- wake


async def test_wake_ticks_an_idle_loop_now_and_restarts_its_cadence() -> None:
    """The wake function makes a waiting loop tick once at once; its next ticks follow from then."""
    interval = 0.05
    runner = FakeRunner("ns/w", interval)
    async with running(Scheduler()) as scheduler:
        wake = scheduler.add(runner, FAR)
        await anyio.sleep(0.02)  # run() now sleeps until FAR
        woken = anyio.current_time()
        for _ in range(3):
            wake()
        await until(lambda: len(runner.starts) >= 3)
    assert woken <= runner.dues[0] < woken + 0.01
    assert runner.starts[0] - woken < WAIT
    assert_on_cadence(runner)  # one tick for the three wakes, then one per interval


async def test_waking_a_ticking_loop_ticks_it_once_more_right_after() -> None:
    """Woken (even thrice) during a tick, a loop ticks once more right after it, then on cadence."""
    gate = anyio.Event()
    runner = FakeRunner("ns/w", FAR, gate=gate)
    async with running(Scheduler()) as scheduler:
        wake = scheduler.add(runner, 0.0)
        await until(lambda: runner.starts)
        for _ in range(3):
            wake()
        await anyio.sleep(0.05)
        assert len(runner.starts) == 1  # not while the tick runs
        gate.set()
        await until(lambda: len(runner.ends) >= 2)
        await anyio.sleep(0.2)  # room for a wrong third tick
    assert len(runner.starts) == 2
    assert runner.most_active == 1
    assert runner.ends[0] <= runner.dues[1] <= runner.starts[1]  # due when the first ended
    assert runner.starts[1] - runner.ends[0] < WAIT
    assert runner.next_at == pytest.approx(runner.dues[1] + FAR)  # cadence from there


@pytest.mark.parametrize("other", [False, True], ids=["nothing_else", "another_due_later"])
async def test_an_earlier_entry_wakes_the_sleeping_scheduler(other: bool) -> None:
    """An entry due before what run() sleeps for (or added to an empty scheduler) ticks on time."""
    async with running(Scheduler()) as scheduler:
        if other:
            scheduler.add(FakeRunner("ns/far", FAR), FAR)
        await anyio.sleep(0.05)  # run() now sleeps until FAR, or for good
        runner = FakeRunner("ns/near", FAR)
        added = anyio.current_time()
        scheduler.add(runner, 0.05)
        await until(lambda: runner.starts, timeout=1.0)
    assert runner.starts[0] >= added + 0.05 - EARLY


# --------------------------------------------------------------------------- remove, re-add


@pytest.mark.parametrize("ticking", [False, True], ids=["idle", "ticking"])
async def test_a_removed_loop_never_ticks_again_but_its_tick_finishes(ticking: bool) -> None:
    """After remove() a loop does not tick (not even woken); its tick in flight is not cancelled."""
    interval = 0.02
    gate = anyio.Event()
    runner = FakeRunner("ns/r", interval, gate=gate)
    async with running(Scheduler()) as scheduler:
        wake = scheduler.add(runner, 0.0 if ticking else interval)
        if ticking:
            await until(lambda: runner.starts)
        assert scheduler.remove("ns/r") is True
        assert scheduler.remove("ns/r") is False
        wake()
        gate.set()
        await anyio.sleep(10 * interval)
    assert len(runner.starts) == int(ticking)
    assert len(runner.ends) == int(ticking)
    assert runner.cancelled == 0


async def test_adding_a_key_again_replaces_its_loop() -> None:
    """A runner added under a key already scheduled replaces the old one, whose wake is dead."""
    interval = 0.02
    old, new = FakeRunner("ns/x", interval), FakeRunner("ns/x", interval)
    async with running(Scheduler()) as scheduler:
        wake_old = scheduler.add(old, 0.0)
        await until(lambda: len(old.starts) >= 2)
        scheduler.add(new, interval)
        ticked = len(old.starts)
        wake_old()
        await until(lambda: len(new.starts) >= 5)
    assert len(old.starts) == ticked
    assert_on_cadence(new)


async def test_a_loop_added_while_its_key_ticks_waits_for_that_tick() -> None:
    """Replacing a key's loop mid-tick: the new loop's first tick starts after the old tick."""
    interval = 0.02
    gate = anyio.Event()
    old, new = FakeRunner("ns/x", interval, gate=gate), FakeRunner("ns/x", interval)
    async with running(Scheduler()) as scheduler:
        scheduler.add(old, 0.0)
        await until(lambda: old.starts)
        wake_new = scheduler.add(new, 0.0)
        wake_new()  # a command to the new loop: still held
        await anyio.sleep(5 * interval)
        assert new.starts == []
        gate.set()
        await until(lambda: len(new.starts) >= 3)
    assert len(old.starts) == len(old.ends) == 1
    assert new.starts[0] >= old.ends[0]
    assert_on_cadence(new)


async def test_adding_the_same_runner_twice_does_not_tick_it_twice() -> None:
    """The same runner added twice keeps one cadence, not two interleaved ones."""
    interval = 0.04
    runner = FakeRunner("ns/x", interval)
    async with running(Scheduler()) as scheduler:
        scheduler.add(runner, 0.0)
        scheduler.add(runner, interval / 2)
        await until(lambda: len(runner.starts) >= 6)
    assert_on_cadence(runner)  # two entries would put ticks half an interval apart


# --------------------------------------------------------------------------- stop


async def test_ticking_counts_ticks_in_flight() -> None:
    """``ticking`` is the number of ticks started and not yet ended."""
    gate = anyio.Event()
    runners = [FakeRunner(f"ns/t{i}", FAR, gate=gate) for i in range(3)]
    async with running(Scheduler()) as scheduler:
        assert scheduler.ticking == 0
        for runner in runners:
            scheduler.add(runner, 0.0)
        await until(lambda: all(r.starts for r in runners))
        assert scheduler.ticking == 3
        gate.set()
        await until(lambda: scheduler.ticking == 0)
    assert all(len(r.ends) == 1 for r in runners)


async def test_stop_lets_ticks_in_flight_finish_within_grace() -> None:
    """stop() starts no tick, waits for the ticks in flight to end and returns 0 when they do."""
    interval = 0.02
    busy = FakeRunner("ns/busy", interval, durations=[0.15])
    idle = FakeRunner("ns/idle", interval)
    async with running(Scheduler()) as scheduler:
        scheduler.add(busy, 0.0)
        await until(lambda: busy.starts)
        wake_idle = scheduler.add(idle, interval)  # due while stop() waits
        assert scheduler.ticking == 1
        started = anyio.current_time()
        assert await scheduler.stop(grace=WAIT) == 0
        waited = anyio.current_time() - started
        assert scheduler.ticking == 0
        wake_idle()
        await anyio.sleep(10 * interval)
    assert len(busy.starts) == 1 and len(busy.ends) == 1 and busy.cancelled == 0
    assert busy.ends[0] <= started + waited  # stop() returned after the tick ended
    assert waited < WAIT - 0.5  # and did not sit out the whole grace
    assert idle.starts == []


async def test_stop_abandons_ticks_that_outlast_grace() -> None:
    """A tick still running after the grace period is cancelled; stop() counts it."""
    grace = 0.2
    quick = FakeRunner("ns/quick", FAR, durations=[0.05])
    stuck = FakeRunner("ns/stuck", FAR, gate=anyio.Event(), cleanup=0.02)
    async with running(Scheduler()) as scheduler:
        scheduler.add(quick, 0.0)
        scheduler.add(stuck, 0.0)
        await until(lambda: quick.starts and stuck.starts)
        started = anyio.current_time()
        assert await scheduler.stop(grace) == 1
        waited = anyio.current_time() - started
        assert scheduler.ticking == 0
    assert len(quick.ends) == 1 and quick.cancelled == 0
    assert stuck.ends == [] and stuck.cancelled == 1 and stuck.active == 0
    assert grace - EARLY <= waited < WAIT


async def test_stop_without_ticks_in_flight_returns_at_once() -> None:
    """stop() with nothing ticking returns 0 at once, and no tick starts afterwards."""
    runner = FakeRunner("ns/later", 0.02)
    async with running(Scheduler()) as scheduler:
        scheduler.add(runner, 0.02)
        with anyio.fail_after(0.5):
            assert await scheduler.stop(grace=FAR) == 0
        await anyio.sleep(0.2)
    assert runner.starts == []


# --------------------------------------------------------------------------- cancelling run()


@pytest.mark.parametrize("how", ["move_on_after", "task_group"], ids=["move_on_after", "tg"])
async def test_cancelling_run_abandons_ticks_and_waits_for_them(how: str) -> None:
    """Cancelled from outside, run() cancels the ticks in flight and returns once they ended."""
    gate = anyio.Event()  # never set
    runners = [FakeRunner(f"ns/s{i}", FAR, gate=gate, cleanup=0.05) for i in range(2)]
    scheduler = Scheduler()
    baseline = asyncio.all_tasks()
    for runner in runners:
        scheduler.add(runner, 0.0)
    if how == "move_on_after":
        with anyio.move_on_after(0.2):
            await scheduler.run()
    else:
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run)
            await until(lambda: scheduler.ticking == 2)
            tg.cancel_scope.cancel()
    assert [r.cancelled for r in runners] == [1, 1]
    assert [r.active for r in runners] == [0, 0]  # their clean-up ran before run() returned
    assert scheduler.ticking == 0
    assert asyncio.all_tasks() == baseline


# --------------------------------------------------------------------------- a buggy tick


async def test_a_raising_tick_is_logged_and_every_loop_goes_on() -> None:
    """A safe_tick that raises is logged as tick.crashed; it and the other loops keep ticking."""
    interval = 0.02
    bad = FakeRunner("ns/bad", interval, error=RuntimeError("bug"))
    good = FakeRunner("ns/good", interval)
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(Scheduler()) as scheduler:
                scheduler.add(bad, 0.0)
                scheduler.add(good, 0.0)
                await until(lambda: len(bad.ends) >= 4 and len(good.ends) >= 4)
                await scheduler.stop(grace=WAIT)
            gc.collect()  # a Task whose exception nobody retrieved complains when collected
    finally:
        loop.set_exception_handler(handler)
    assert unhandled == []
    crashed = [entry for entry in logs if entry["event"] == "tick.crashed"]
    assert len(crashed) == len(bad.ends)
    assert crashed[0]["key"] == "ns/bad"
    assert crashed[0]["log_level"] == "error"
    assert_on_cadence(bad)
    assert_on_cadence(good)


# --------------------------------------------------------------------------- overload


async def test_overload_waits_in_order_of_due_time_within_the_cap() -> None:
    """With more ticks due than slots, at most ``max_ticking`` run; the rest start by due time."""
    runners = [FakeRunner(f"ns/{i}", 0.05, durations=[0.1] * 3) for i in range(6)]
    async with running(Scheduler(max_ticking=2)) as scheduler:
        for i, runner in enumerate(runners):
            scheduler.add(runner, 0.01 * i)
        await until(lambda: all(len(r.ends) >= 2 for r in runners))
        lag = scheduler.lag(anyio.current_time())
    starts = [r.starts[0] for r in runners]
    assert starts == sorted(starts)  # first due, first started: nobody is overtaken
    spans = [(s, e) for r in runners for s, e in zip(r.starts, r.ends, strict=False)]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 2
    assert lag >= 0.1  # 0.1 s ticks of 6 loops on 2 slots: every 0.3 s, not every 0.05 s


async def test_no_canary_starves_when_the_scheduler_is_behind() -> None:
    """Loops that ask for more than the slots can give all tick, each about as often."""
    runners = [FakeRunner(f"ns/{i}", 0.02, durations=[0.01] * 1000) for i in range(20)]
    async with running(Scheduler(max_ticking=2)) as scheduler:
        for runner in runners:
            scheduler.add(runner, 0.0)
        await anyio.sleep(1.0)
        behind = scheduler.lag(anyio.current_time())
    counts = [len(r.starts) for r in runners]
    assert min(counts) >= 3 and max(counts) - min(counts) <= 2, counts
    assert all(r.most_active == 1 for r in runners)
    assert behind > 0.05  # 20 loops of 0.02 s on 2 slots of 0.01 s ticks: 0.1 s a round


async def test_lag_is_zero_when_on_time() -> None:
    """A scheduler that keeps up reports no lag."""
    runners = [FakeRunner(f"ns/{i}", 0.05) for i in range(5)]
    async with running(Scheduler()) as scheduler:
        for runner in runners:
            scheduler.add(runner, 0.0)
        await until(lambda: all(len(r.starts) >= 3 for r in runners))
        assert scheduler.lag(anyio.current_time()) < 0.05


async def test_one_stall_of_the_event_loop_is_not_lag() -> None:
    """One stall makes a few ticks late; the lag (90th percentile) stays near zero."""
    runners = [FakeRunner(f"ns/{i}", 0.1) for i in range(10)]
    async with running(Scheduler()) as scheduler:
        for i, runner in enumerate(runners):
            scheduler.add(runner, 0.01 * i)
        await anyio.sleep(1.5)
        asyncio.get_running_loop().call_soon(time.sleep, 0.3)  # a long GC pause, say
        await anyio.sleep(0.6)
        lag = scheduler.lag(anyio.current_time())
    assert lag < 0.1
    assert max(s - d for r in runners for s, d in zip(r.starts, r.dues, strict=True)) >= 0.25
