"""The runtime's rollout webhooks: their own timeouts, gates, muteAlert, operators cutting waits."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from receiver import Receiver
from runtime_helpers import outbox, runner, settings

from canaryd.config import Settings
from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState, Phase
from canaryd.http import HttpTransport
from canaryd.service.store import StateStore
from canaryd.testing import FakeProvider, FakeRouter

pytestmark = pytest.mark.anyio


@pytest.mark.slow
async def test_a_hooks_own_timeout_is_honoured_beyond_the_ticks_budget(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A rollout hook that answers after the tick's budget (+5 s) but within its own timeout
    passes: the tick waits for it, as Flagger waits for a `helm test` with timeout: 3m."""
    async with Receiver(delay=5.6) as r:
        hooks = [{"name": "helm-test", "type": "rollout", "url": r.url, "timeout": "20s"}]
        cfg = settings(tmp_path, interval="100ms", webhooks=hooks)
        run = runner(cfg, store, session, FakeProvider(), FakeRouter())
        await run.start_rollout("v2", {})
        await run.tick()  # weight 0 -> 25: no checks yet
        started = time.monotonic()
        await run.tick()
        waited = time.monotonic() - started
    assert (run.state.failed_checks, run.state.canary_weight) == (0, 50)
    assert len(r.requests) == 1 and 5.5 < waited < 20


@pytest.mark.slow
async def test_a_tick_is_bounded_by_its_hooks_own_timeout(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A hook that never answers fails the check once its own timeout has passed, no later."""
    async with Receiver(delay=60) as r:
        hooks = [{"name": "helm-test", "type": "rollout", "url": r.url, "timeout": "1s"}]
        run = runner(
            settings(tmp_path, webhooks=hooks), store, session, FakeProvider(), FakeRouter()
        )
        await run.start_rollout("v2", {})
        await run.tick()
        started = time.monotonic()
        await run.tick()
        waited = time.monotonic() - started
    assert run.state.failed_checks == 1 and waited < 3
    assert "no answer within 1s" in (run.state.reason or "")


async def test_rollback_hooks_are_not_called_while_promoting(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Once promotion has begun a rollback webhook is not called, so its 2xx cannot roll back."""
    async with Receiver() as r:
        hooks = [{"name": "stop", "type": "rollback", "url": r.url}]
        promoting = CanaryState(
            phase=Phase.PROMOTING,
            revision="v2",
            rollout_id="r1",
            canary_weight=50,
            primary_weight=50,
        )
        cfg = settings(tmp_path, webhooks=hooks)
        run = runner(cfg, store, session, FakeProvider(), FakeRouter(), promoting)
        await run.tick()
        await run.tick()
    assert r.requests == []
    assert run.state.phase is Phase.SUCCEEDED


@pytest.mark.parametrize(
    ("status", "phases"),
    [(200, ["Progressing", "Progressing"]), (403, ["Progressing", "Waiting"])],
    ids=["open", "closed"],
)
async def test_confirm_rollout_waits_only_when_the_gate_answers_closed(
    tmp_path: Path,
    store: StateStore,
    session: HttpTransport,
    status: int,
    phases: list[str],
) -> None:
    """A rollout behind a confirm-rollout webhook is Waiting only once the webhook said no."""
    async with Receiver(statuses=[status]) as r:
        hooks = [{"name": "go", "type": "confirm-rollout", "url": r.url}]
        run = runner(
            settings(tmp_path, webhooks=hooks), store, session, FakeProvider(), FakeRouter()
        )
        seen = [(await run.start_rollout("v2", {})).phase.value]
        await run.tick()
        seen.append(run.state.phase.value)
    events = [e["event"] for e in await store.events("prod/web")]
    assert seen == phases and len(r.requests) == 1
    assert ("rollout.waiting" in events) is (status != 200)


@pytest.mark.parametrize("mute", [True, False], ids=["muted", "not-muted"])
async def test_mute_alert_keeps_the_waiting_alert_off_chat_but_not_off_event_hooks(
    tmp_path: Path, store: StateStore, session: HttpTransport, mute: bool
) -> None:
    """muteAlert on the gate webhook that said no drops the waiting alert; event hooks still
    get the event, with Flagger's metadata."""
    async with Receiver(statuses=[403]) as gate:
        hooks = [
            {"name": "go", "type": "confirm-rollout", "url": gate.url, "muteAlert": mute},
            {"name": "audit", "type": "event", "url": "http://127.0.0.1:9/"},
        ]
        cfg = settings(tmp_path, webhooks=hooks)
        raw = cfg.model_dump(mode="json", by_alias=True)
        raw["notifiers"] = {"chat": {"type": "rocket", "url": "http://127.0.0.1:9/"}}
        raw["canaries"][0]["alerts"] = [{"name": "chat", "notifier": "chat"}]
        cfg = Settings.model_validate(raw)
        run = runner(cfg, store, session, FakeProvider(), FakeRouter())
        await run.start_rollout("v2", {})
        await run.tick()
    rows = outbox(store)
    alerts = [body["event"] for target, body in rows if target == "alert:chat"]
    hooked = [body for target, body in rows if target == "hook:audit"]
    waiting = next(b for b in hooked if b["event"]["event"] == "rollout.waiting")
    assert alerts == (["rollout.started"] if mute else ["rollout.started", "rollout.waiting"])
    assert waiting["metadata"]["eventType"] == "Warning"
    assert waiting["metadata"]["eventMessage"].startswith("prod/web v2: waiting for approval")


@pytest.mark.parametrize(
    ("verb", "phase"),
    [("abort", Phase.FAILED), ("pause", Phase.PAUSED), ("promote", Phase.PROMOTING)],
    ids=["abort", "pause", "promote"],
)
async def test_abort_pause_promote_do_not_wait_for_a_slow_hook(
    tmp_path: Path, store: StateStore, session: HttpTransport, verb: str, phase: Phase
) -> None:
    """An operator's abort, pause or promote cuts short a tick waiting minutes for a hook; that
    tick decides and counts nothing, and the command applies at once."""
    async with Receiver(delay=60) as r:
        hooks = [{"name": "helm-test", "type": "rollout", "url": r.url, "timeout": "3m"}]
        run = runner(
            settings(tmp_path, webhooks=hooks), store, session, FakeProvider(), FakeRouter()
        )
        await run.start_rollout("v2", {})
        await run.tick()  # weight 0 -> 25
        tick = asyncio.ensure_future(run.tick())
        await r.wait_for(1)
        fn = {"abort": core.abort, "pause": core.pause, "promote": core.promote}[verb]
        started = time.monotonic()
        state = await asyncio.wait_for(
            run.command(lambda s, now: fn(run.spec, s, now), interrupt=True), 5
        )
        await asyncio.wait_for(tick, 5)
        waited = time.monotonic() - started
    events = [e["event"] for e in await store.events("prod/web")]
    assert state.phase is phase and waited < 3
    assert state.failed_checks == 0 and "check.failed" not in events
    assert events.count("analysis.tick") == 1  # the first tick's only
