"""The runtime's tick with fakes at the seams: queries, persistence, the store down, reloads."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from postgres import AnyStore, query
from runtime_helpers import runner, settings

from canaryd.core import analysis as core
from canaryd.core.analysis import Phase
from canaryd.errors import ProviderError, StoreError
from canaryd.http import HttpTransport
from canaryd.service.store import StateStore
from canaryd.testing import FakeProvider, FakeRouter

pytestmark = pytest.mark.anyio


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
