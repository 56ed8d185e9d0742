"""Decisions the store could not record are not dropped when a reload removes the canary or
the daemon stops: they are recorded once it can, or ``state.unrecorded_lost`` says so.

A real in-process daemon on SQLite, its connection made read-only (``PRAGMA
query_only``) while checks fail (docs/reliability.md, "Decisions and state").
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from service_helpers import canary, prom_answer
from support import eventually
from test_signals import Running, running, start_rollout

from canaryd.core.analysis import CanaryState
from canaryd.service import lifecycle, runtime
from canaryd.service import supervisor as supervisor_module
from canaryd.service.store import SqliteStore

pytestmark = pytest.mark.anyio

KEY = "prod/web"
FAILING: dict[str, Any] = {"interval": "200ms", "threshold": 50, "stepWeight": 1, "maxWeight": 99}
"""Checks that fail every 200 ms, far from the threshold: nothing but failed checks to record."""


def _read_only(db: sqlite3.Connection, on: bool) -> None:
    db.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


async def writable(r: Running, on: bool) -> None:
    """Make the daemon's store refuse writes, or take them again."""
    store = r.daemon.services.store
    assert isinstance(store, SqliteStore)
    await store._run(_read_only, store.db, not on)


async def stored(r: Running) -> CanaryState:
    """The canary's state as the store has it."""
    return (await r.daemon.services.store.load_states())[KEY]


def on_disk(db: Path) -> int:
    """The canary's failed checks in the database file (the daemon has closed it)."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (raw,) = conn.execute("SELECT state FROM canaries WHERE key=?", (KEY,)).fetchone()
    failed: int = json.loads(raw)["failed_checks"]
    return failed


async def failing_unrecorded(r: Running) -> runtime.CanaryRunner:
    """Start a rollout, then fail its checks while the store refuses writes, until two
    failed checks wait in memory; return the canary's loop."""
    await start_rollout(r)
    runner = r.daemon.runner(KEY)
    assert runner is not None
    await writable(r, False)
    r.prom.body = prom_answer(1.0)
    await eventually(lambda: len(runner._backlog) >= 2, what="failed checks kept in memory")
    return runner


async def test_a_removed_canarys_unrecorded_failed_checks_are_recorded_once_it_can(
    tmp_path: Path,
) -> None:
    """A canary removed while failed checks wait in memory records them when the store can."""
    other = canary("other", interval="1h")
    async with running(tmp_path, [canary(**FAILING), other]) as r:
        runner = await failing_unrecorded(r)
        r.rewrite(lambda data: data.update(canaries=[other]))
        assert await r.daemon.reload()
        counted = runner.state.failed_checks
        await writable(r, True)
        await eventually(
            lambda: KEY not in r.daemon.supervisor.removed, what="the removed loop let go"
        )
        assert runner.settled and not r.daemon.scheduler.remove(KEY)
        state = await stored(r)
        assert state.failed_checks == runner.state.failed_checks >= counted >= 2, state


async def test_a_removed_canary_that_cannot_record_says_what_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A removed canary whose store stays unwritable gives up after its grace and says so."""
    monkeypatch.setattr(lifecycle, "UNRECORDED_GRACE_SECONDS", 1.0)
    other = canary("other", interval="1h")
    with structlog.testing.capture_logs() as logs:
        async with running(tmp_path, [canary(**FAILING), other]) as r:
            await failing_unrecorded(r)
            r.rewrite(lambda data: data.update(canaries=[other]))
            assert await r.daemon.reload()
            await eventually(lambda: _gave_up(logs), what="the removed loop gave up")
            assert not r.daemon.scheduler.remove(KEY)
            await writable(r, True)
    lost = [e for e in logs if e["event"] == "state.unrecorded_lost"]
    assert len(lost) == 1 and lost[0]["reason"] == "removed from the config", lost
    assert lost[0]["unrecorded"] >= 2 and lost[0]["log_level"] == "error", lost


def _gave_up(logs: Sequence[Mapping[str, Any]]) -> bool:
    """Whether a removed loop has said what it gave up recording."""
    return any(e["event"] == "state.unrecorded_lost" for e in logs)


async def test_a_canary_added_back_after_its_removed_loop_gave_up_records_what_waited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Added back after its removed loop gave up recording, a canary continues from that loop
    and records the failed checks it kept, once the store can."""
    monkeypatch.setattr(lifecycle, "UNRECORDED_GRACE_SECONDS", 1.0)
    other = canary("other", interval="1h")
    with structlog.testing.capture_logs() as logs:
        async with running(tmp_path, [canary(**FAILING), other]) as r:
            old = await failing_unrecorded(r)
            r.rewrite(lambda data: data.update(canaries=[other]))
            assert await r.daemon.reload()
            await eventually(lambda: _gave_up(logs), what="the removed loop gave up")
            waited = {u.record.time for u in old._backlog if u.record is not None}
            counted = old.state.failed_checks
            await writable(r, True)
            r.rewrite(lambda data: data.update(canaries=[canary(**FAILING), other]))
            assert await r.daemon.reload()
            store = r.daemon.services.store
            await eventually(
                lambda: store.history(KEY, 1000),
                lambda h: waited <= {c["time"] for c in h},
                what="the failed checks the removed loop kept, recorded",
            )
            assert (await stored(r)).failed_checks >= counted >= 2
    assert len(waited) >= 2


@pytest.mark.parametrize("comes_back", [True, False], ids=["store-back", "store-down"])
async def test_a_stopping_daemon_records_what_waits_or_says_what_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, comes_back: bool
) -> None:
    """At stop, failed checks waiting in memory are recorded if the store takes them by then;
    if it does not, ``state.unrecorded_lost`` says what is lost."""
    monkeypatch.setattr(supervisor_module, "UNRECORDED_STOP_SECONDS", 1.0)
    with structlog.testing.capture_logs() as logs:
        async with running(tmp_path, [canary(**FAILING)]) as r:
            runner = await failing_unrecorded(r)
            stop = r.daemon.scheduler.stop

            async def stop_then_mend(grace: float) -> int:
                abandoned = await stop(grace)  # no tick records anything from here on
                if comes_back:
                    await writable(r, True)
                return abandoned

            monkeypatch.setattr(r.daemon.scheduler, "stop", stop_then_mend)
            r.daemon.stop()
            with anyio.fail_after(30):
                await r.finished.wait()
            store = r.daemon.services.store
            assert isinstance(store, SqliteStore)
            failed = on_disk(store.path)
    lost = [e for e in logs if e["event"] == "state.unrecorded_lost"]
    if comes_back:
        assert failed == runner.state.failed_checks >= 2, failed
        assert lost == []
    else:
        assert failed < runner.state.failed_checks, failed
        assert len(lost) == 1 and lost[0]["reason"] == "daemon stopping", lost


async def test_a_canary_removed_with_its_promote_pending_says_it_is_abandoned(
    tmp_path: Path,
) -> None:
    """A canary removed while the router has not confirmed its promote logs
    ``reload.promote_abandoned``; the record keeps saying the promote is pending."""
    other = canary("other", interval="1h")
    with structlog.testing.capture_logs() as logs:
        async with running(tmp_path, [canary(), other]) as r:
            r.router.statuses = [200, 200, 200, 500]  # route 10, 20, 30; promote refused
            runner = r.daemon.runner(KEY)
            assert runner is not None
            await runner.start_rollout("v2", {})
            await eventually(lambda: r.state().route_pending, what="the promote pending")
            r.rewrite(lambda data: data.update(canaries=[other]))
            assert await r.daemon.reload()
            state = await stored(r)
    assert (state.phase.value, state.route_pending) == ("Promoting", True), state
    abandoned = [e for e in logs if e["event"] == "reload.promote_abandoned"]
    assert len(abandoned) == 1 and abandoned[0]["log_level"] == "error", abandoned
    assert abandoned[0]["revision"] == "v2", abandoned
