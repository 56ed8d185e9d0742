"""What reaches the outbox: alerts by severity, event and post-rollout hooks, after restarts.

Most tests drive the dispatcher one poll at a time (``drain_once``) with a
clock the test moves forward, so retries and dead letters need no waiting;
messages come from real runner decisions or are written to the store directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from outbox_helpers import SECRET, audited, config, dispatcher, drain, keys, services, verify
from receiver import Receiver, self_signed

from canaryd.core.analysis import CanaryState, Phase
from canaryd.http import HttpTransport
from canaryd.service.runtime import CanaryRunner
from canaryd.service.store import StateStore
from canaryd.testing import FakeClock as Clock
from canaryd.testing import FakeProvider

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- what goes out


async def rollout(runner: CanaryRunner, ticks: int) -> None:
    """Start a rollout of v2 and run ``ticks`` ticks."""
    await runner.start_rollout("v2", {})
    for _ in range(ticks):
        await runner.tick()


@pytest.mark.parametrize(
    ("severity", "events", "expected"),
    [
        (
            "info",
            "all",
            ["rollout.started", "weight.advanced", "check.failed", "rollout.rolled_back"],
        ),
        ("warn", "all", ["check.failed", "rollout.rolled_back"]),
        ("error", "all", ["rollout.rolled_back"]),
        ("info", "flagger", ["rollout.started", "rollout.rolled_back"]),
        ("warn", "flagger", ["rollout.rolled_back"]),
        ("info", ["check.failed", "weight.advanced"], ["weight.advanced", "check.failed"]),
        ("error", ["check.failed", "weight.advanced"], []),
    ],
    ids=["info-all", "warn-all", "error-all", "info-flagger", "warn-flagger", "list", "list-error"],
)
async def test_alerts_are_filtered_by_severity(
    tmp_path: Path,
    store: StateStore,
    session: HttpTransport,
    severity: str,
    events: Any,
    expected: list[str],
) -> None:
    """An alert sends the events its ``events`` setting chooses (Flagger's by default) that are
    at or above its severity, in order."""
    alert = {"name": "a", "notifier": "n", "severity": severity, "events": events}
    async with Receiver() as r:
        cfg = config(
            tmp_path,
            [{"name": "web", "alerts": [alert]}],
            notifiers={"n": {"type": "webhook", "url": r.url + "/alerts"}},
        )
        provider = FakeProvider([50.0])  # tick 1 only moves to 25%; tick 2 fails: rollback
        runner = CanaryRunner(
            cfg.canaries[0], CanaryState(), services(cfg, store, session, provider)
        )
        await rollout(runner, 2)
        assert runner.state.phase is Phase.FAILED
        clock = Clock()
        d = dispatcher(runner.services, clock)
        await drain(d, clock, lambda: len(r.requests) == len(expected))
        await d.drain_once()  # nothing more goes out
    assert [q.json["event"] for q in r.requests] == expected


async def test_event_webhooks_receive_every_event_in_order(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """An ``event`` webhook gets each stored event, analysis ticks included, in order, signed."""
    async with Receiver() as r:
        hooks = audited(["web"], r.url, secret_env="CANARYD_TEST_SECRET")
        cfg = config(tmp_path, hooks)
        runner = CanaryRunner(cfg.canaries[0], CanaryState(), services(cfg, store, session))
        await rollout(runner, 6)
        assert runner.state.phase is Phase.SUCCEEDED
        events = [e["event"] for e in reversed(await store.events("prod/web"))]
        clock = Clock()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CANARYD_TEST_SECRET", SECRET)
            d = dispatcher(runner.services, clock)
            await drain(d, clock, lambda: len(r.requests) == len(events))
    assert [q.json["event"]["event"] for q in r.requests] == events
    assert {"analysis.tick", "rollout.promoted"} <= set(events)
    assert {q.json["type"] for q in r.requests} == {"event"}
    assert all(verify(q, SECRET) for q in r.requests)


@pytest.mark.parametrize("disable_tls", [True, False], ids=["disableTLS", "verified"])
async def test_event_hook_with_disable_tls_reaches_a_self_signed_receiver(
    tmp_path: Path, store: StateStore, session: HttpTransport, disable_tls: bool
) -> None:
    """An outbox-delivered hook with disableTLS reaches an HTTPS receiver whose certificate does
    not verify, with Flagger's event metadata; without it nothing is delivered."""
    async with Receiver(tls=self_signed(tmp_path)) as r:
        cfg = config(tmp_path, audited(["web"], r.url, disableTLS=disable_tls))
        runner = CanaryRunner(cfg.canaries[0], CanaryState(), services(cfg, store, session))
        await runner.start_rollout("v2", {})
        clock = Clock()
        d = dispatcher(runner.services, clock)
        for _ in range(3):
            await d.drain_once()
            clock.advance(1.0)
    assert len(r.requests) == (1 if disable_tls else 0)
    if disable_tls:
        metadata = r.requests[0].json["metadata"]
        assert metadata["eventType"] == "Normal"
        assert metadata["eventMessage"].startswith("prod/web v2: rollout started")
        assert metadata["timestamp"].isdigit()


@pytest.mark.parametrize(
    ("values", "ticks", "phase"),
    [([99.9], 6, "Succeeded"), ([50.0], 4, "Failed")],
    ids=["promotion", "rollback"],
)
async def test_post_rollout_hook_fires_once_at_the_end(
    tmp_path: Path,
    store: StateStore,
    session: HttpTransport,
    values: list[float | None],
    ticks: int,
    phase: str,
) -> None:
    """A post-rollout webhook is called exactly once when a rollout is promoted or rolled back."""
    async with Receiver() as r:
        hook = {"name": "post", "type": "post-rollout", "url": r.url + "/post"}
        cfg = config(tmp_path, [{"name": "web", "analysis": {"webhooks": [hook]}}])
        svc = services(cfg, store, session, FakeProvider([*values]))
        runner = CanaryRunner(cfg.canaries[0], CanaryState(), svc)
        await rollout(runner, ticks)  # a few ticks more than needed: the end is idle
        assert runner.state.phase.value == phase
        clock = Clock()
        d = dispatcher(svc, clock)
        await drain(d, clock, lambda: len(r.requests) == 1)
        await d.drain_once()
    assert len(r.requests) == 1
    body = r.requests[0].json
    assert (body["type"], body["phase"], body["revision"]) == ("post-rollout", phase, "v2")


async def test_alerts_after_a_restart_mid_rollout_are_not_lost(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A runner rebuilt from the store (a restart) writes new messages under new keys."""
    async with Receiver() as r:
        cfg = config(
            tmp_path,
            [{"name": "web", "alerts": [{"name": "a", "notifier": "n", "events": "all"}]}],
            notifiers={"n": {"type": "webhook", "url": r.url}},
        )
        svc = services(cfg, store, session)
        first = CanaryRunner(cfg.canaries[0], CanaryState(), svc)
        await rollout(first, 1)
        stored = (await store.load_states())["prod/web"]
        second = CanaryRunner(cfg.canaries[0], stored, svc)
        from canaryd.core import analysis as core

        await second.command(lambda s, now: core.pause(second.spec, s, now))
        clock = Clock()
        d = dispatcher(svc, clock)
        await drain(d, clock, lambda: len(r.requests) == 3)
    assert [q.json["event"] for q in r.requests] == [
        "rollout.started",
        "weight.advanced",
        "rollout.paused",
    ]
    assert len(set(keys(r.requests))) == 3
