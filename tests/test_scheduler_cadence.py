"""The scheduler's cadence: first delay, interval grid, wakes, the cap, lag, the clocks.

See tests/scheduler_helpers.py for the fake clock and loops.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from itertools import pairwise

import anyio
import pytest
from scheduler_helpers import (
    FAR,
    WAIT,
    FakeRunner,
    advance,
    advance_until,
    assert_on_cadence,
    running,
    settle,
    slots,
)

from canaryd.service.scheduler import EARLY_SECONDS, Scheduler
from canaryd.testing import FakeLoopClock

pytestmark = pytest.mark.anyio


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


async def test_a_tick_due_within_the_clocks_millisecond_starts_without_waiting() -> None:
    """A tick due less than EARLY_SECONDS ahead starts now, with no timer to wait for (on
    uvloop's millisecond clock such a wait spins the event loop); one due later waits."""
    clock = FakeLoopClock()
    soon = FakeRunner("ns/soon", FAR, clock)
    later = FakeRunner("ns/later", FAR, clock)
    async with running(Scheduler(clock)) as scheduler:
        start = clock.now
        scheduler.add(soon, EARLY_SECONDS / 2)
        scheduler.add(later, EARLY_SECONDS * 2)
        await settle()
        assert soon.starts == [start]  # the clock has not moved: no timer was needed
        assert later.starts == []
        assert clock.next_timer() == pytest.approx(start + EARLY_SECONDS * 2)
        await advance(clock, EARLY_SECONDS * 2)
        assert later.starts == pytest.approx([start + EARLY_SECONDS * 2])
    assert scheduler.lag(clock.now) == 0.0  # the early start counts as on time
