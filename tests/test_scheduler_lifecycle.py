"""The scheduler's loops added, replaced, removed, stopped, cancelled, or raising.

See tests/scheduler_helpers.py for the fake clock and loops.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import anyio
import pytest
import structlog
from scheduler_helpers import (
    FAR,
    FakeRunner,
    advance,
    advance_until,
    assert_on_cadence,
    running,
    settle,
)

from canaryd.service.scheduler import Scheduler
from canaryd.testing import FakeLoopClock

pytestmark = pytest.mark.anyio


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
