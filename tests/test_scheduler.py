"""The scheduler at its seam: fake loops (``Tickable``) that record when they tick.

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
import gc
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import anyio
import pytest
import structlog

from canaryd.service.scheduler import Scheduler
from canaryd.testing import FakeLoopClock

pytestmark = pytest.mark.anyio

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


def _blocked(task: asyncio.Task[Any]) -> bool:
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
            still = all(task is me or _blocked(task) for task in asyncio.all_tasks())
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


# --------------------------------------------------------------------------- cadence


async def test_first_tick_after_first_delay_then_every_interval() -> None:
    """A loop ticks first ``first_delay`` after it was added, then once per interval on a grid."""
    interval, delay = 0.05, 0.1
    clock = FakeLoopClock()
    runner = FakeRunner("ns/a", interval, clock)
    async with running(Scheduler(clock)) as scheduler:
        added = clock.now
        scheduler.add(runner, delay)
        assert runner.next_at == added + delay
        await advance(clock, delay + 7.5 * interval)
    assert runner.starts == pytest.approx([added + delay + k * interval for k in range(8)])
    assert_on_cadence(runner)
    assert runner.next_at == pytest.approx(added + delay + 8 * interval)  # the next slot


async def test_many_loops_tick_once_per_interval_from_one_task() -> None:
    """200 loops each tick once per interval, and waiting loops hold no task of their own."""
    interval, n, window = 0.1, 200, 5
    clock = FakeLoopClock()
    runners = [FakeRunner(f"ns/c{i}", interval, clock) for i in range(n)]
    scheduler = Scheduler(clock)
    baseline = len(asyncio.all_tasks())
    async with running(scheduler):
        for i, runner in enumerate(runners):
            scheduler.add(runner, interval * (i + 0.5) / n)
        await advance(clock, window * interval)
        assert len(asyncio.all_tasks()) == baseline + 1  # run() alone
        assert await scheduler.stop(grace=1.0) == 0
    assert [len(r.starts) for r in runners] == [window] * n
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
    clock = FakeLoopClock()
    runner = FakeRunner("ns/slow", interval, clock, durations=durations)
    async with running(Scheduler(clock)) as scheduler:
        scheduler.add(runner, 0.0)
        await advance_until(clock, lambda: len(runner.ends) >= 5)
    assert_on_cadence(runner)  # includes: ticks never overlap
    overran = zip(runner.ends[: len(durations)], runner.dues[1:], strict=False)
    for end, next_due in overran:
        assert end <= next_due < end + interval  # the first slot after the tick ended
    for k, (earlier, later) in enumerate(pairwise(runner.dues)):
        assert slots(earlier, later, interval) == (3 if k < len(durations) else 1)


# --------------------------------------------------------------------------- wake


async def test_wake_ticks_an_idle_loop_now_and_restarts_its_cadence() -> None:
    """The wake function makes a waiting loop tick once at once; its next ticks follow from then."""
    interval = 0.05
    clock = FakeLoopClock()
    runner = FakeRunner("ns/w", interval, clock)
    async with running(Scheduler(clock)) as scheduler:
        wake = scheduler.add(runner, FAR)
        await advance(clock, 0.02)  # run() now sleeps until FAR
        woken = clock.now
        for _ in range(3):
            wake()
        await settle()
        assert runner.starts == [woken]
        await advance(clock, 2.5 * interval)
    assert runner.starts == pytest.approx([woken + k * interval for k in range(3)])
    assert_on_cadence(runner)  # one tick for the three wakes, then one per interval


async def test_waking_a_ticking_loop_ticks_it_once_more_right_after() -> None:
    """Woken (even thrice) during a tick, a loop ticks once more right after it, then on cadence."""
    gate = asyncio.Event()
    clock = FakeLoopClock()
    runner = FakeRunner("ns/w", FAR, clock, durations=[0.5], gate=gate)
    async with running(Scheduler(clock)) as scheduler:
        wake = scheduler.add(runner, 0.0)
        await settle()
        for _ in range(3):
            wake()
        await advance(clock, 1.0)
        assert len(runner.starts) == 1  # not while the tick runs
        gate.set()
        await settle()
        assert len(runner.starts) == len(runner.ends) == 2
        await advance(clock, 100.0)  # room for a wrong third tick
    assert len(runner.starts) == 2
    assert runner.most_active == 1
    assert runner.dues[1] == runner.starts[1] == runner.ends[0]  # due when the first ended
    assert runner.next_at == runner.dues[1] + FAR  # cadence from there


@pytest.mark.parametrize("other", [False, True], ids=["nothing_else", "another_due_later"])
async def test_an_earlier_entry_wakes_the_sleeping_scheduler(other: bool) -> None:
    """An entry due before what run() sleeps for (or added to an empty scheduler) ticks on time."""
    clock = FakeLoopClock()
    async with running(Scheduler(clock)) as scheduler:
        if other:
            scheduler.add(FakeRunner("ns/far", FAR, clock), FAR)
        await advance(clock, 0.05)  # run() now sleeps until FAR, or for good
        runner = FakeRunner("ns/near", FAR, clock)
        added = clock.now
        scheduler.add(runner, 0.05)
        await advance(clock, 0.06)
    assert runner.starts == [added + 0.05]


# --------------------------------------------------------------------------- remove, re-add


@pytest.mark.parametrize("ticking", [False, True], ids=["idle", "ticking"])
async def test_a_removed_loop_never_ticks_again_but_its_tick_finishes(ticking: bool) -> None:
    """After remove() a loop does not tick (not even woken); its tick in flight is not cancelled."""
    interval = 0.02
    gate = asyncio.Event()
    clock = FakeLoopClock()
    runner = FakeRunner("ns/r", interval, clock, gate=gate)
    async with running(Scheduler(clock)) as scheduler:
        wake = scheduler.add(runner, 0.0 if ticking else interval)
        await settle()
        assert len(runner.starts) == int(ticking)
        assert scheduler.remove("ns/r") is True
        assert scheduler.remove("ns/r") is False
        wake()
        gate.set()
        await advance(clock, 10 * interval)
    assert len(runner.starts) == int(ticking)
    assert len(runner.ends) == int(ticking)
    assert runner.cancelled == 0


async def test_adding_a_key_again_replaces_its_loop() -> None:
    """A runner added under a key already scheduled replaces the old one, whose wake is dead."""
    interval = 0.02
    clock = FakeLoopClock()
    old, new = FakeRunner("ns/x", interval, clock), FakeRunner("ns/x", interval, clock)
    async with running(Scheduler(clock)) as scheduler:
        wake_old = scheduler.add(old, 0.0)
        await advance(clock, 1.5 * interval)
        assert len(old.starts) == 2
        scheduler.add(new, interval)
        wake_old()
        await advance(clock, 5.5 * interval)
    assert len(old.starts) == 2
    assert len(new.starts) == 5
    assert_on_cadence(new)


async def test_a_loop_added_while_its_key_ticks_waits_for_that_tick() -> None:
    """Replacing a key's loop mid-tick: the new loop's first tick starts after the old tick."""
    interval = 0.02
    gate = asyncio.Event()
    clock = FakeLoopClock()
    old, new = FakeRunner("ns/x", interval, clock, gate=gate), FakeRunner("ns/x", interval, clock)
    async with running(Scheduler(clock)) as scheduler:
        scheduler.add(old, 0.0)
        await settle()
        wake_new = scheduler.add(new, 0.0)
        wake_new()  # a command to the new loop: still held
        await advance(clock, 5 * interval)
        assert new.starts == []
        gate.set()
        await settle()
        ended = clock.now
        await advance(clock, 2.5 * interval)
    assert len(old.starts) == len(old.ends) == 1
    assert new.starts == pytest.approx([ended + k * interval for k in range(3)])
    assert_on_cadence(new)


async def test_adding_the_same_runner_twice_does_not_tick_it_twice() -> None:
    """The same runner added twice keeps one cadence, not two interleaved ones."""
    interval = 0.04
    clock = FakeLoopClock()
    runner = FakeRunner("ns/x", interval, clock)
    async with running(Scheduler(clock)) as scheduler:
        scheduler.add(runner, 0.0)
        scheduler.add(runner, interval / 2)
        await advance(clock, 5 * interval)
    assert len(runner.starts) == 5  # two entries would tick it every half interval
    assert_on_cadence(runner)


# --------------------------------------------------------------------------- stop


async def test_ticking_counts_ticks_in_flight() -> None:
    """``ticking`` is the number of ticks started and not yet ended."""
    gate = asyncio.Event()
    clock = FakeLoopClock()
    runners = [FakeRunner(f"ns/t{i}", FAR, clock, gate=gate) for i in range(3)]
    async with running(Scheduler(clock)) as scheduler:
        assert scheduler.ticking == 0
        for runner in runners:
            scheduler.add(runner, 0.0)
        await settle()
        assert scheduler.ticking == 3
        gate.set()
        await settle()
        assert scheduler.ticking == 0
    assert all(len(r.ends) == 1 for r in runners)


async def test_stop_lets_ticks_in_flight_finish_within_grace() -> None:
    """stop() starts no tick, waits for the ticks in flight to end and returns 0 when they do."""
    interval = 0.02
    clock = FakeLoopClock()
    busy = FakeRunner("ns/busy", interval, clock, durations=[0.15])
    idle = FakeRunner("ns/idle", interval, clock)
    stopped: list[int] = []

    async def stop(scheduler: Scheduler) -> None:
        stopped.append(await scheduler.stop(grace=10.0))

    async with running(Scheduler(clock)) as scheduler, anyio.create_task_group() as tg:
        scheduler.add(busy, 0.0)
        await settle()
        wake_idle = scheduler.add(idle, interval)  # due while stop() waits
        assert scheduler.ticking == 1
        started = clock.now
        tg.start_soon(stop, scheduler)
        await advance_until(clock, lambda: stopped)
        assert clock.now == pytest.approx(started + 0.15)  # when the tick ended, not the grace
        assert scheduler.ticking == 0
        wake_idle()
        await advance(clock, 10 * interval)
    assert stopped == [0]
    assert len(busy.starts) == 1 and len(busy.ends) == 1 and busy.cancelled == 0
    assert idle.starts == []


async def test_stop_abandons_ticks_that_outlast_grace() -> None:
    """A tick still running after the grace period is cancelled; stop() counts it."""
    grace = 0.2
    clock = FakeLoopClock()
    quick = FakeRunner("ns/quick", FAR, clock, durations=[0.05])
    stuck = FakeRunner("ns/stuck", FAR, clock, gate=asyncio.Event(), cleanup=3)
    stopped: list[int] = []

    async def stop(scheduler: Scheduler) -> None:
        stopped.append(await scheduler.stop(grace))

    async with running(Scheduler(clock)) as scheduler, anyio.create_task_group() as tg:
        scheduler.add(quick, 0.0)
        scheduler.add(stuck, 0.0)
        await settle()
        started = clock.now
        tg.start_soon(stop, scheduler)
        await advance(clock, grace - 0.01)
        assert stopped == [] and len(quick.ends) == 1 and stuck.cancelled == 0
        await advance_until(clock, lambda: stopped)
        assert clock.now == pytest.approx(started + grace)
        assert scheduler.ticking == 0
    assert stopped == [1]
    assert quick.cancelled == 0
    assert stuck.ends == [] and stuck.cancelled == 1 and stuck.active == 0


async def test_stop_without_ticks_in_flight_returns_at_once() -> None:
    """stop() with nothing ticking returns 0 without waiting, and no tick starts afterwards."""
    clock = FakeLoopClock()
    runner = FakeRunner("ns/later", 0.02, clock)
    async with running(Scheduler(clock)) as scheduler:
        scheduler.add(runner, 0.02)
        assert await scheduler.stop(grace=FAR) == 0  # the clock never moves: no wait on it
        await advance(clock, 1.0)
    assert runner.starts == []


# --------------------------------------------------------------------------- cancelling run()


@pytest.mark.parametrize("how", ["cancel_scope", "task_group"], ids=["scope", "tg"])
async def test_cancelling_run_abandons_ticks_and_waits_for_them(how: str) -> None:
    """Cancelled from outside, run() cancels the ticks in flight and returns once they ended."""
    gate = asyncio.Event()  # never set
    clock = FakeLoopClock()
    runners = [FakeRunner(f"ns/s{i}", FAR, clock, gate=gate, cleanup=3) for i in range(2)]
    scheduler = Scheduler(clock)
    baseline = asyncio.all_tasks()
    for runner in runners:
        scheduler.add(runner, 0.0)
    if how == "cancel_scope":
        with anyio.CancelScope() as scope:
            runners[-1].on_start = scope.cancel  # both ticks have started by then
            await scheduler.run()
    else:
        async with anyio.create_task_group() as tg:
            tg.start_soon(scheduler.run)
            await settle()
            assert scheduler.ticking == 2
            tg.cancel_scope.cancel()
    assert [r.cancelled for r in runners] == [1, 1]
    assert [r.active for r in runners] == [0, 0]  # their clean-up ran before run() returned
    assert scheduler.ticking == 0
    assert asyncio.all_tasks() == baseline


# --------------------------------------------------------------------------- a buggy tick


async def test_a_raising_tick_is_logged_and_every_loop_goes_on() -> None:
    """A safe_tick that raises is logged as tick.crashed; it and the other loops keep ticking."""
    interval = 0.02
    clock = FakeLoopClock()
    bad = FakeRunner("ns/bad", interval, clock, error=RuntimeError("bug"))
    good = FakeRunner("ns/good", interval, clock)
    loop = asyncio.get_running_loop()
    unhandled: list[dict[str, Any]] = []
    handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: unhandled.append(context))
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(Scheduler(clock)) as scheduler:
                scheduler.add(bad, 0.0)
                scheduler.add(good, 0.0)
                await advance(clock, 3.5 * interval)
                await scheduler.stop(grace=1.0)
            gc.collect()  # a Task whose exception nobody retrieved complains when collected
    finally:
        loop.set_exception_handler(handler)
    assert unhandled == []
    crashed = [entry for entry in logs if entry["event"] == "tick.crashed"]
    assert len(bad.ends) == len(good.ends) == 4
    assert len(crashed) == 4
    assert crashed[0]["key"] == "ns/bad"
    assert crashed[0]["log_level"] == "error"
    assert_on_cadence(bad)
    assert_on_cadence(good)


# --------------------------------------------------------------------------- overload


async def test_overload_waits_in_order_of_due_time_within_the_cap() -> None:
    """With more ticks due than slots, at most ``max_ticking`` run; the rest start by due time."""
    clock = FakeLoopClock()
    runners = [FakeRunner(f"ns/{i}", 0.05, clock, durations=[0.1] * 3) for i in range(6)]
    async with running(Scheduler(clock, max_ticking=2)) as scheduler:
        for i, runner in enumerate(runners):
            scheduler.add(runner, 0.01 * i)
        await advance_until(clock, lambda: all(len(r.ends) >= 2 for r in runners))
        lag = scheduler.lag(scheduler.now())
    starts = [r.starts[0] for r in runners]
    assert starts == sorted(starts)  # first due, first started: nobody is overtaken
    spans = [(s, e) for r in runners for s, e in zip(r.starts, r.ends, strict=False)]
    assert max(sum(s <= t < e for s, e in spans) for t, _ in spans) == 2
    assert lag >= 0.1  # 0.1 s ticks of 6 loops on 2 slots: every 0.3 s, not every 0.05 s


async def test_no_canary_starves_when_the_scheduler_is_behind() -> None:
    """Loops that ask for more than the slots can give all tick, each about as often."""
    clock = FakeLoopClock()
    runners = [FakeRunner(f"ns/{i}", 0.02, clock, durations=[0.01] * 1000) for i in range(20)]
    async with running(Scheduler(clock, max_ticking=2)) as scheduler:
        for runner in runners:
            scheduler.add(runner, 0.0)
        await advance(clock, 1.0)
        behind = scheduler.lag(scheduler.now())
    counts = [len(r.starts) for r in runners]
    assert min(counts) >= 9 and max(counts) - min(counts) <= 1, counts  # 200 ticks, 20 loops
    assert all(r.most_active == 1 for r in runners)
    assert behind > 0.05  # 20 loops of 0.02 s on 2 slots of 0.01 s ticks: 0.1 s a round


async def test_lag_is_zero_when_on_time() -> None:
    """A scheduler that keeps up reports no lag."""
    clock = FakeLoopClock()
    runners = [FakeRunner(f"ns/{i}", 0.05, clock, durations=[0.01] * 10) for i in range(5)]
    async with running(Scheduler(clock)) as scheduler:
        for runner in runners:
            scheduler.add(runner, 0.0)
        await advance(clock, 0.5)
        assert all(len(r.starts) >= 10 for r in runners)
        assert scheduler.lag(scheduler.now()) == 0.0


async def test_one_stall_of_the_event_loop_is_not_lag() -> None:
    """One stall makes a few ticks late; the lag (90th percentile) stays near zero."""
    clock = FakeLoopClock()
    runners = [FakeRunner(f"ns/{i}", 0.1, clock) for i in range(10)]
    async with running(Scheduler(clock)) as scheduler:
        for i, runner in enumerate(runners):
            scheduler.add(runner, 0.01 * i)
        await advance(clock, 1.5)
        clock.advance(0.3)  # the loop stalls (a long GC pause, say): every timer fires late
        await settle()
        await advance(clock, 0.6)
        lag = scheduler.lag(scheduler.now())
    assert lag < 0.1
    assert max(s - d for r in runners for s, d in zip(r.starts, r.dues, strict=True)) >= 0.25


# --------------------------------------------------------------------------- the real clock


async def test_without_a_clock_the_scheduler_runs_on_the_event_loops() -> None:
    """By default due times are the event loop's clock, and a loop added due now ticks."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()

    @dataclass(eq=False)
    class Runner:
        """A loop that notes the event loop's clock when it ticks."""

        key: str = "ns/real"
        interval: float = FAR
        next_at: float = 0.0
        at: float = 0.0

        async def safe_tick(self) -> None:
            """Note the time; tell the test."""
            self.at = loop.time()
            started.set()

    runner = Runner()
    async with running(Scheduler()) as scheduler:
        before = loop.time()
        assert before <= scheduler.now() <= loop.time()
        scheduler.add(runner, 0.0)
        with anyio.fail_after(WAIT):
            await started.wait()
    assert before <= runner.next_at - FAR <= runner.at <= loop.time()


# --------------------------------------------------------------------------- the fake clock


async def test_the_fake_clock_fires_its_timers_in_order_each_at_its_time() -> None:
    """advance() calls the timers due by then earliest first, each seeing its own time;
    a cancelled timer is not called, and sleep() returns once the clock passed it."""
    clock = FakeLoopClock(now=0.0)
    seen: list[tuple[str, float]] = []
    clock.call_at(2.0, lambda name: seen.append((name, clock.now)), "b")
    clock.call_at(1.0, lambda name: seen.append((name, clock.now)), "a")
    clock.call_at(1.5, lambda name: seen.append((name, clock.now)), "x").cancel()
    clock.call_at(9.0, lambda name: seen.append((name, clock.now)), "late")
    clock.advance(5.0)
    assert seen == [("a", 1.0), ("b", 2.0)]
    assert clock.now == 5.0
    assert clock.next_timer() == 9.0
    woke: list[float] = []

    async def nap() -> None:
        await clock.sleep(3.0)
        woke.append(clock.now)

    async with anyio.create_task_group() as tg:
        tg.start_soon(nap)
        await settle()
        clock.advance(2.9)
        await settle()
        assert woke == []
        clock.advance(0.1)
    assert woke == [pytest.approx(8.0)]
