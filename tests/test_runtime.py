"""The runtime around the core, with in-memory fakes at the provider/router seams."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from postgres import AnyStore, query
from receiver import Receiver

from canaryd.config import Settings
from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState, Phase
from canaryd.errors import CommandError, FencedError, ProviderError, RouterError, StoreError
from canaryd.http import HttpTransport
from canaryd.routers import RouteRequest
from canaryd.service.runtime import CanaryRunner
from canaryd.service.services import Services
from canaryd.service.store import StateStore
from canaryd.testing import FakeProvider, FakeRouter

pytestmark = pytest.mark.anyio


def settings(tmp_path: Path, **analysis: Any) -> Settings:
    """A one-canary config whose single metric is a plain query on provider ``prom``."""
    a: dict[str, Any] = {"interval": "1s", "threshold": 2, "stepWeight": 25, "maxWeight": 50}
    a.update(analysis)
    a.setdefault(
        "metrics",
        [
            {
                "name": "sr",
                "query": 'rate(x{job="{{ target }}"}[{{ interval }}])',
                "thresholdRange": {"min": 99},
                "interval": "30s",
            }
        ],
    )
    return Settings.model_validate(
        {
            "state": f"sqlite://{tmp_path}/state.db",
            "providers": {"prom": {"type": "prometheus"}},
            "routers": {"lb": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
            "canaries": [
                {
                    "name": "web",
                    "namespace": "prod",
                    "router": "lb",
                    "target": "web-canary",
                    "analysis": a,
                }
            ],
        }
    )


def runner(
    cfg: Settings,
    store: StateStore,
    session: HttpTransport,
    provider: FakeProvider,
    router: FakeRouter,
    state: CanaryState | None = None,
) -> CanaryRunner:
    """A runner for the config's only canary, with a fixed clock."""
    services = Services(
        cfg, session, {"prom": provider}, {"lb": router}, store, clock=lambda: 1000.0
    )
    return CanaryRunner(cfg.canaries[0], state or CanaryState(), services)


async def test_query_is_rendered_with_target_and_interval(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """The metric's template gets the canary's target and the metric's interval."""
    provider, router = FakeProvider(), FakeRouter()
    r = runner(settings(tmp_path), store, session, provider, router)
    await r.start_rollout("v2", {})
    await r.tick()  # 0 -> 25, no analysis yet
    await r.tick()
    assert provider.queries == ['rate(x{job="web-canary"}[30s])']


async def test_rollout_progresses_and_is_persisted(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Each tick's state is in the store, and a new runner from the store continues it."""
    provider, router = FakeProvider(), FakeRouter()
    cfg = settings(tmp_path)
    r = runner(cfg, store, session, provider, router)
    await r.start_rollout("v2", {"ticket": "OPS-1"})
    await r.tick()
    await r.tick()
    assert [q.canary_weight for q in router.requests] == [25, 50]
    stored = (await store.load_states())["prod/web"]
    assert stored == r.state
    assert (stored.canary_weight, stored.revision, stored.metadata) == (
        50,
        "v2",
        {"ticket": "OPS-1"},
    )
    again = runner(cfg, store, session, provider, router, state=stored)
    for _ in range(3):
        await again.tick()
    assert again.state.phase is Phase.SUCCEEDED
    assert [q.action for q in router.requests] == ["route", "route", "promote", "route"]
    history = await store.history("prod/web")
    assert history[0]["outcome"] == "pass"


async def test_failing_metric_rolls_back_and_tells_the_router(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """threshold failing ticks roll back, and the router receives the rollback action."""
    provider, router = FakeProvider([90.0]), FakeRouter()
    r = runner(settings(tmp_path), store, session, provider, router)
    await r.start_rollout("v2", {})
    for _ in range(3):
        await r.tick()
    assert r.state.phase is Phase.FAILED
    assert r.state.reason == "sr 90 < min 99"
    last = router.requests[-1]
    assert (last.action, last.primary_weight, last.canary_weight) == ("rollback", 100, 0)
    events = [e["event"] for e in await store.events("prod/web")]
    assert events[0] == "rollout.rolled_back"


async def test_provider_error_is_a_failed_check_with_its_message(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A provider that keeps failing fails the check with the provider's message."""
    provider = FakeProvider([ProviderError("prometheus: connection refused")])
    r = runner(settings(tmp_path), store, session, provider, FakeRouter())
    await r.start_rollout("v2", {})
    await r.tick()
    await r.tick()
    assert r.state.failed_checks == 1
    assert r.state.reason == "sr: prometheus: connection refused"


async def test_router_down_holds_the_check_and_never_records_an_unapplied_weight(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A router failure keeps (and records) the old weight and holds the check, as in Flagger:
    no failed check however many ticks it lasts, even at threshold 1."""
    router = FakeRouter(down=True)
    r = runner(settings(tmp_path, threshold=1), store, session, FakeProvider(), router)
    await r.start_rollout("v2", {})
    for _ in range(3):
        await r.tick()
    assert (r.state.phase, r.state.canary_weight, r.state.failed_checks) == (
        Phase.PROGRESSING,
        0,
        0,
    )
    assert (await store.load_states())["prod/web"] == r.state
    events = [e["event"] for e in await store.events("prod/web", 50)]
    assert events.count("router.failed") == 3 and "check.failed" not in events
    router.down = False
    await r.tick()
    assert r.state.canary_weight == 25


async def test_rollback_route_is_retried_until_applied(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """An abort whose rollback route fails answers the router's error, stays pending at the
    weights the router still has, and is retried on the next tick."""
    router = FakeRouter()
    r = runner(settings(tmp_path), store, session, FakeProvider(), router)
    await r.start_rollout("v2", {})
    await r.tick()
    router.down = True
    with pytest.raises(RouterError, match=r"rollback pending.*connection refused"):
        await r.command(lambda s, now: core.abort(r.spec, s, now))
    assert r.state.phase is Phase.FAILED and r.state.route_pending
    assert r.state.canary_weight == 25, "the weight the router still has, not the refused 0"
    router.down = False
    await r.tick()
    assert not r.state.route_pending
    assert (r.state.primary_weight, r.state.canary_weight) == (100, 0)
    assert router.requests[-1].action == "rollback"


async def test_unwritable_store_holds_the_canary(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """If the decision cannot be persisted, the in-memory state does not advance."""
    r = runner(settings(tmp_path), store, session, FakeProvider(), FakeRouter())
    await r.start_rollout("v2", {})
    before = r.state
    await store.close()
    await r.tick()
    assert r.state == before
    with pytest.raises(StoreError):
        await r.command(lambda s, now: core.pause(r.spec, s, now))


async def test_outbox_rows_are_written_with_the_decision(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Post-rollout hooks land in the outbox in the same transaction as the rollback."""
    hooks = [{"name": "notify", "type": "post-rollout", "url": "http://127.0.0.1:9/"}]
    r = runner(
        settings(tmp_path, threshold=1, webhooks=hooks),
        store,
        session,
        FakeProvider([50.0]),
        FakeRouter(),
    )
    await r.start_rollout("v2", {})
    await r.tick()
    await r.tick()
    assert r.state.phase is Phase.FAILED
    rows = query(r.services.store, "SELECT target, idem FROM outbox ORDER BY id")
    assert [t for t, _ in rows] == ["hook:notify"]
    assert rows[0][1].startswith("prod/web:")


async def test_rollback_goes_out_even_when_the_store_is_down(
    tmp_path: Path, store: AnyStore, session: HttpTransport
) -> None:
    """With the store down a failing check still rolls back, and is recorded once it is back."""
    router = FakeRouter()
    r = runner(settings(tmp_path, threshold=1), store, session, FakeProvider([90.0]), router)
    await r.start_rollout("v2", {})
    await r.tick()  # 0 -> 25, persisted
    await store.close()
    await r.tick()  # failing check at threshold: rollback, not persistable
    assert router.requests[-1].action == "rollback"
    assert (r.state.phase, r.state.failed_checks) == (Phase.FAILED, 1)
    await store.open()
    await r.tick()  # nothing to analyse: records what waited
    stored = (await store.load_states())["prod/web"]
    assert (stored.phase, stored.failed_checks, stored.seq) == (Phase.FAILED, 1, r.state.seq)


@dataclass
class BlockingProvider(FakeProvider):
    """A provider whose answers wait until ``release`` is set (a tick held in flight)."""

    release: asyncio.Event = field(default_factory=asyncio.Event)
    asked: asyncio.Event = field(default_factory=asyncio.Event)

    async def query(self, query: str, *, budget: float) -> float | None:
        """Answer once released."""
        self.asked.set()
        await self.release.wait()
        return await super().query(query, budget=budget)


async def test_a_reload_mid_tick_applies_from_the_next_tick(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A tick in flight decides with the config it observed with; the next uses the new one."""
    provider, router = BlockingProvider(values=[95.0]), FakeRouter()
    old = settings(
        tmp_path,
        threshold=1,
        metrics=[{"name": "sr", "query": "q", "thresholdRange": {"min": 90}, "interval": "30s"}],
    )
    new = settings(
        tmp_path,
        threshold=1,
        metrics=[{"name": "sr", "query": "q", "thresholdRange": {"min": 99}, "interval": "30s"}],
    )
    r = runner(old, store, session, provider, router)
    provider.release.set()
    await r.start_rollout("v2", {})
    await r.tick()  # weight 0 -> 25: no checks yet
    provider.release.clear()
    tick = asyncio.ensure_future(r.tick())
    await asyncio.wait_for(provider.asked.wait(), 5)
    r.reconfigure(new.canaries[0], new)  # 95 would fail min 99
    assert r.spec.analysis.metrics[0].thresholdRange is not None
    assert r.spec.analysis.metrics[0].thresholdRange.min == 90  # not yet: a tick is in flight
    provider.release.set()
    await asyncio.wait_for(tick, 5)
    first = r.state
    assert first.phase is Phase.PROGRESSING and first.canary_weight == 50  # judged by min 90
    await r.tick()
    second = r.state
    assert second.phase is Phase.FAILED  # judged by min 99
    assert r.spec.analysis.metrics[0].thresholdRange.min == 99


@dataclass
class PickyRouter(FakeRouter):
    """A router that refuses some actions (``refuse``) while applying the others."""

    refuse: set[str] = field(default_factory=set)

    async def apply(self, request: RouteRequest) -> None:
        """Refuse a listed action like a router answering 500; apply anything else."""
        if request.action in self.refuse:
            raise RouterError(f"router lb: HTTP 500 on {request.action}")
        await super().apply(request)


async def test_router_down_after_promote_never_rolls_back(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """After the router accepted promote, its errors are retried and alerted, never counted
    as failed checks nor turned into a rollback; the promotion finishes once it is back."""
    router = FakeRouter()
    r = runner(settings(tmp_path, threshold=2), store, session, FakeProvider(), router)
    await r.start_rollout("v2", {})
    for _ in range(3):  # 25, 50, promote
        await r.tick()
    assert r.state.phase is Phase.PROMOTING
    router.down = True
    for _ in range(5):
        await r.tick()
    assert (r.state.phase, r.state.failed_checks, r.state.canary_weight) == (Phase.PROMOTING, 0, 50)
    assert "rollback" not in [q.action for q in router.requests]
    events = [e["event"] for e in await store.events("prod/web", 50)]
    assert "router.failed" in events and "rollout.rolled_back" not in events
    router.down = False
    await r.tick()
    await r.tick()
    final: CanaryState = r.state  # mypy narrowed r.state.phase above
    assert final.phase is Phase.SUCCEEDED


async def test_a_new_rollout_applies_the_pending_rollback_first(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A start while a rollback is pending is refused until the router takes the rollback; then
    the rollback goes out before the new rollout starts."""
    router = FakeRouter()
    r = runner(settings(tmp_path), store, session, FakeProvider(), router)
    await r.start_rollout("v2", {})
    await r.tick()
    router.down = True
    with pytest.raises(RouterError):
        await r.command(lambda s, now: core.abort(r.spec, s, now))
    with pytest.raises(CommandError, match="rollback of revision v2 is not applied yet"):
        await r.start_rollout("v3", {})
    assert r.state.route_pending and r.state.revision == "v2"
    router.down = False
    await r.start_rollout("v3", {})
    assert (r.state.revision, r.state.phase, r.state.route_pending) == (
        "v3",
        Phase.PROGRESSING,
        False,
    )
    assert router.requests[-1].action == "rollback"


async def test_recorded_weights_are_the_last_the_router_confirmed(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Blue/green whose router takes ``route 0/100`` but refuses ``promote``: the recorded
    weights are the confirmed 0/100 on every tick, and the refused promote (which the router
    may have applied) is a promotion under way, never a failed check."""
    router = PickyRouter(refuse={"promote"})
    cfg = settings(tmp_path, stepWeight=None, maxWeight=None, iterations=1, threshold=3)
    r = runner(cfg, store, session, FakeProvider(), router)
    await r.start_rollout("v2", {})
    for _ in range(4):
        await r.tick()
        last = router.requests[-1] if router.requests else None
        confirmed = (last.primary_weight, last.canary_weight) if last else (100, 0)
        assert (r.state.primary_weight, r.state.canary_weight) == confirmed
    assert confirmed == (0, 100) and r.state.failed_checks == 0
    assert (r.state.phase, r.state.route_pending) == (Phase.PROMOTING, True)
    assert [q.action for q in router.requests] == ["route"]


async def test_promote_with_the_router_down_begins_the_promotion_and_retries_it(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """An operator's promote whose route fails raises the router's error, but the promotion has
    begun (the router may have applied it): Promoting with the route pending, no failed check,
    and the promote is sent again each tick until the router takes it."""
    router = FakeRouter()
    r = runner(settings(tmp_path, threshold=1), store, session, FakeProvider(), router)
    await r.start_rollout("v2", {})
    await r.tick()
    router.down = True
    with pytest.raises(RouterError, match=r"promote pending.*connection refused"):
        await r.command(lambda s, now: core.promote(r.spec, s, now))
    pending = r.state
    assert (pending.phase, pending.route_pending, pending.failed_checks) == (
        Phase.PROMOTING,
        True,
        0,
    )
    assert pending.canary_weight == 25, "the weights the router confirmed last"
    assert (await store.load_states())["prod/web"] == pending
    for _ in range(3):
        await r.tick()
    assert r.state.phase is Phase.PROMOTING and r.state.failed_checks == 0
    router.down = False
    await r.tick()
    assert [q.action for q in router.requests] == ["route", "promote"]
    assert not r.state.route_pending
    await r.tick()
    await r.tick()
    final: CanaryState = r.state
    assert (final.phase, final.canary_weight) == (Phase.SUCCEEDED, 0)
    events = [e["event"] for e in await store.events("prod/web", 50)]
    assert events.count("router.failed") == 4 and "rollout.rolled_back" not in events


async def test_a_reload_lowering_threshold_rolls_back_on_the_next_tick(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """threshold 5 -> 2 with 3 failed checks: the next tick rolls back instead of going on."""
    provider, router = FakeProvider([90.0, 90.0, 90.0, 99.9]), FakeRouter()
    r = runner(settings(tmp_path, threshold=5), store, session, provider, router)
    await r.start_rollout("v2", {})
    for _ in range(4):
        await r.tick()
    assert (r.state.failed_checks, r.state.phase) == (3, Phase.PROGRESSING)
    lowered = settings(tmp_path, threshold=2)
    r.reconfigure(lowered.canaries[0], lowered)
    await r.tick()
    assert r.state.phase is Phase.FAILED
    assert router.requests[-1].action == "rollback"


async def test_a_new_revision_restarts_with_traffic_back_on_the_primary(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A new revision mid-rollout routes 100/0 first and starts over; the same revision again
    changes nothing."""
    router = FakeRouter()
    r = runner(settings(tmp_path), store, session, FakeProvider(), router)
    await r.start_rollout("v2", {})
    await r.tick()
    first = r.state.rollout_id
    await r.start_rollout("v3", {})
    last = router.requests[-1]
    assert (last.action, last.primary_weight, last.canary_weight) == ("route", 100, 0)
    assert (r.state.revision, r.state.canary_weight) == ("v3", 0)
    assert r.state.rollout_id != first
    again = r.state
    await r.start_rollout("v3", {})
    assert r.state == again and len(router.requests) == 2
    events = [e["event"] for e in await store.events("prod/web", 10)]
    assert events[:2] == ["rollout.started", "rollout.restarted"]


# --------------------------------------------------------------------------- webhooks


def outbox(store: StateStore) -> list[tuple[str, dict[str, Any]]]:
    """The outbox rows (target, payload) in the order they were written."""
    rows = query(store, "SELECT target, payload FROM outbox ORDER BY id")
    return [(target, json.loads(body)) for target, body in rows]


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


# --------------------------------------------------------------------------- refused rollbacks


def _alerting(tmp_path: Path, **analysis: Any) -> Settings:
    """``settings`` plus a post-rollout hook, an event hook and a default (Flagger) alert."""
    hooks = [
        {"name": "notify", "type": "post-rollout", "url": "http://127.0.0.1:9/"},
        {"name": "audit", "type": "event", "url": "http://127.0.0.1:9/"},
    ]
    raw = settings(tmp_path, webhooks=hooks, **analysis).model_dump(mode="json", by_alias=True)
    raw["notifiers"] = {"pager": {"type": "webhook", "url": "http://127.0.0.1:9/"}}
    raw["canaries"][0]["alerts"] = [{"name": "pager", "notifier": "pager"}]
    return Settings.model_validate(raw)


def _reported(store: StateStore) -> tuple[list[str], list[str], int]:
    """Alerted event names, events sent to the event hook, and post-rollout hook messages."""
    rows = outbox(store)
    alerts = [body["event"] for target, body in rows if target == "alert:pager"]
    hooked = [body["event"]["event"] for target, body in rows if target == "hook:audit"]
    return alerts, hooked, sum(target == "hook:notify" for target, _ in rows)


@pytest.mark.parametrize("cause", ["threshold", "abort"])
async def test_a_refused_rollback_is_reported_only_once_the_router_confirms_it(
    tmp_path: Path, store: StateStore, session: HttpTransport, cause: str
) -> None:
    """While the router refuses the rollback route, rollback.pending is stored and alerted but no
    rollout.rolled_back event, alert or post-rollout hook exists; the tick that gets the route
    through reports each exactly once, with the decision's reason (and manual flag)."""
    router = PickyRouter(refuse={"rollback"})
    provider = FakeProvider([90.0])
    r = runner(_alerting(tmp_path, threshold=1), store, session, provider, router)
    await r.start_rollout("v2", {})
    await r.tick()  # 0 -> 25, not judged yet
    if cause == "abort":
        with pytest.raises(RouterError, match="rollback pending"):
            await r.command(lambda s, now: core.abort(r.spec, s, now))
    else:
        await r.tick()  # sr 90 < min 99 at threshold 1: rollback, refused
    for _ in range(3):
        await r.tick()
        assert (r.state.phase, r.state.route_pending, r.state.canary_weight) == (
            Phase.FAILED,
            True,
            25,
        )
    events = [e["event"] for e in await store.events("prod/web", 50)]
    alerts, hooked, post = _reported(store)
    assert "rollout.rolled_back" not in events + alerts + hooked and post == 0
    assert events.count("rollback.pending") == 1 and "rollback.pending" in alerts
    assert events.count("router.failed") == 3
    router.refuse.clear()
    await r.tick()
    assert (r.state.route_pending, r.state.primary_weight, r.state.canary_weight) == (
        False,
        100,
        0,
    )
    stored = await store.events("prod/web", 50)
    alerts, hooked, post = _reported(store)
    assert [e["event"] for e in stored].count("rollout.rolled_back") == 1
    assert alerts.count("rollout.rolled_back") == 1 and hooked.count("rollout.rolled_back") == 1
    assert post == 1
    rolled = next(e for e in stored if e["event"] == "rollout.rolled_back")
    reason = "aborted by operator" if cause == "abort" else "sr 90 < min 99"
    assert rolled["reason"] == reason and rolled.get("manual", False) is (cause == "abort")
    await r.tick()
    alerts, _, post = _reported(store)
    assert alerts.count("rollout.rolled_back") == 1 and post == 1, "reported once, not again"


async def test_a_pending_rollback_survives_a_restart_and_is_reported_once_applied(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """The held-back rolled_back fields are stored with the state: a new runner from the store
    applies the rollback and reports it with the reason and manual flag decided before."""
    router = PickyRouter(refuse={"rollback"})
    cfg = _alerting(tmp_path)
    r = runner(cfg, store, session, FakeProvider(), router)
    await r.start_rollout("v2", {})
    await r.tick()
    with pytest.raises(RouterError):
        await r.command(lambda s, now: core.abort(r.spec, s, now, "bad canary"))
    stored = (await store.load_states())["prod/web"]
    assert stored.route_pending and stored.rollback_fields["manual"] is True
    router.refuse.clear()
    again = runner(cfg, store, session, FakeProvider(), router, state=stored)
    await again.tick()
    rolled = [e for e in await store.events("prod/web", 50) if e["event"] == "rollout.rolled_back"]
    assert [(e["reason"], e["manual"]) for e in rolled] == [("bad canary", True)]
    assert _reported(store)[2] == 1


async def test_a_replica_that_no_longer_leads_sends_no_route(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Once the lease is lost a rollback is neither routed nor recorded (docs/ha.md)."""
    router = FakeRouter()
    r = runner(settings(tmp_path, threshold=1), store, session, FakeProvider([50.0]), router)
    await r.start_rollout("v2", {})
    await r.tick()  # 0 -> 25, routed while leading
    sent = len(router.requests)
    before = (await store.load_states())["prod/web"]
    r.services.leading = lambda: False
    with pytest.raises(FencedError):
        await r.tick()  # the failed check would roll back
    assert len(router.requests) == sent > 0
    assert (await store.load_states())["prod/web"] == before
