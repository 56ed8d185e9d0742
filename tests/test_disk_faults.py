"""The state store on a really full and a really read-only filesystem, and routes vs. records.

The store lives on a small filesystem the test mounts (see ``tests/disks.py``):
a tmpfs filled to its last byte, or an ext4 filesystem the kernel turns
read-only under the open database. Runners use the fakes of ``test_runtime``
at the provider and router seams. See docs/reliability.md, "Decisions and state".
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from disks import Disk, small_ext4, small_tmpfs
from postgres import query
from runtime_helpers import runner, settings

from canaryd.core.analysis import CanaryState, Phase
from canaryd.http import HttpTransport
from canaryd.routers import RouteRequest
from canaryd.service.store import SqliteStore, StateStore
from canaryd.testing import FakeProvider, FakeRouter

pytestmark = pytest.mark.anyio

KEY = "prod/web"
EVENT_HOOK = [{"name": "events", "type": "event", "url": "http://127.0.0.1:9/"}]


async def _store_on(disk: Disk) -> SqliteStore:
    store = SqliteStore(disk.path / "state.db")
    await store.open()
    return store


async def _stored(store: StateStore) -> CanaryState:
    return (await store.load_states())[KEY]


def _outbox(store: StateStore) -> list[tuple[str, str]]:
    """(status, event name or target) of every outbox row, oldest first."""
    rows = query(store, "SELECT status, target, payload FROM outbox ORDER BY id")
    return [(s, json.loads(p).get("event", {}).get("event", t)) for s, t, p in rows]


@pytest.fixture
async def full_disk(tmp_path: Path) -> AsyncIterator[tuple[Disk, SqliteStore]]:
    """A store on a 1 MiB tmpfs (not yet full)."""
    with small_tmpfs(tmp_path) as disk:
        store = await _store_on(disk)
        try:
            yield disk, store
        finally:
            await store.close()


async def test_failing_checks_roll_back_on_a_really_full_disk(
    tmp_path: Path, full_disk: tuple[Disk, SqliteStore], session: HttpTransport
) -> None:
    """On a full disk failing checks still count and roll back at threshold; recorded once freed."""
    disk, store = full_disk
    router = FakeRouter()
    cfg = settings(tmp_path, threshold=2, webhooks=EVENT_HOOK)
    r = runner(cfg, store, session, FakeProvider([90.0]), router)
    await r.start_rollout("v2", {})
    await r.tick()  # 0 -> 25, recorded before the route
    disk.fill()
    await r.tick()
    assert (r.state.phase, r.state.failed_checks) == (Phase.PROGRESSING, 1)
    await r.tick()
    assert (r.state.phase, r.state.failed_checks) == (Phase.FAILED, 2)
    assert [q.action for q in router.requests] == ["route", "rollback"]
    stored = await _stored(store)
    assert (stored.phase, stored.failed_checks) == (Phase.PROGRESSING, 0), "the disk took it?"
    disk.free()
    await r.tick()
    stored = await _stored(store)
    assert (stored.phase, stored.failed_checks, stored.seq) == (Phase.FAILED, 2, r.state.seq)
    events = [e for _, e in _outbox(store)]
    assert events.count("check.failed") == 2 and events[-1] == "rollout.rolled_back", events


async def test_traffic_never_moves_ahead_of_the_record_on_a_really_full_disk(
    tmp_path: Path, full_disk: tuple[Disk, SqliteStore], session: HttpTransport
) -> None:
    """On a full disk a healthy canary holds (no route, no failed check), then continues."""
    disk, store = full_disk
    router = FakeRouter()
    r = runner(settings(tmp_path, maxWeight=75), store, session, FakeProvider([99.9]), router)
    await r.start_rollout("v2", {})
    await r.tick()  # 0 -> 25
    disk.fill()
    for _ in range(3):
        await r.tick()
    assert [q.canary_weight for q in router.requests] == [25], "routed ahead of the record"
    assert (r.state.canary_weight, r.state.failed_checks) == (25, 0)
    assert (await _stored(store)).canary_weight == 25
    disk.free()
    await r.tick()
    assert [q.canary_weight for q in router.requests] == [25, 50]
    assert (await _stored(store)).canary_weight == 50 == r.state.canary_weight


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
async def test_a_filesystem_gone_read_only_holds_healthy_and_rolls_back_failing(
    tmp_path: Path, session: HttpTransport
) -> None:
    """After the kernel turns the state filesystem read-only, no traffic moves forward and
    failing checks still roll back at threshold."""
    with small_ext4(tmp_path) as disk:
        store = await _store_on(disk)
        try:
            router = FakeRouter()
            provider = FakeProvider([99.9])
            r = runner(
                settings(tmp_path, threshold=2, maxWeight=75), store, session, provider, router
            )
            await r.start_rollout("v2", {})
            await r.tick()  # 0 -> 25
            disk.break_read_only()
            await r.tick()  # healthy: would advance to 50, cannot record it
            assert [q.canary_weight for q in router.requests] == [25]
            assert (r.state.canary_weight, r.state.failed_checks) == (25, 0)
            provider.values = [90.0]
            await r.tick()
            await r.tick()
            assert (r.state.phase, r.state.failed_checks) == (Phase.FAILED, 2)
            assert [q.action for q in router.requests] == ["route", "rollback"]
        finally:
            await store.close()


async def test_a_route_that_fails_after_its_record_is_reverted_in_the_store(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A recorded advance whose route then fails is reverted: the store keeps the old weight
    with the check held (no failed check, even at threshold 1), and the advance's held messages
    never go out."""
    router = FakeRouter()
    cfg = settings(tmp_path, threshold=1, webhooks=EVENT_HOOK)
    r = runner(cfg, store, session, FakeProvider([99.9]), router)
    await r.start_rollout("v2", {})
    router.down = True
    await r.tick()
    stored = await _stored(store)
    assert (
        (stored.phase, stored.canary_weight, stored.failed_checks)
        == (Phase.PROGRESSING, 0, 0)
        == (r.state.phase, r.state.canary_weight, r.state.failed_checks)
    )
    rows = _outbox(store)
    assert "weight.advanced" not in [e for _, e in rows], rows
    assert {s for s, _ in rows} == {"pending"}
    assert await store.load_pending() == {}


@dataclass
class HangingRouter(FakeRouter):
    """Records requests; hangs (the daemon dies meanwhile) on the first of ``action``."""

    action: str = "promote"
    hung: asyncio.Event = field(default_factory=asyncio.Event)

    async def apply(self, request: RouteRequest) -> None:
        """Record, then hang once on the chosen action."""
        self.requests.append(request)
        if request.action == self.action and not self.hung.is_set():
            self.hung.set()
            await asyncio.sleep(3600)


async def test_a_recorded_promotion_cut_short_is_sent_again_after_a_restart(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """A promotion recorded but not confirmed by the router is sent again, same key, on restart."""
    router = HangingRouter()
    cfg = settings(tmp_path, maxWeight=25, webhooks=EVENT_HOOK)
    r = runner(cfg, store, session, FakeProvider([99.9]), router)
    await r.start_rollout("v2", {})
    await r.tick()  # 0 -> 25
    tick = asyncio.ensure_future(r.tick())  # promote: recorded, then the router hangs
    await asyncio.wait_for(router.hung.wait(), 5)
    tick.cancel()  # the daemon dies here
    await asyncio.gather(tick, return_exceptions=True)
    stored = await _stored(store)
    assert stored.phase is Phase.PROMOTING
    assert "held" in {s for s, _ in _outbox(store)}
    again = runner(cfg, store, session, FakeProvider([99.9]), router, stored)
    again.restore((await store.load_pending()).get(KEY))
    await again.tick()
    promotes = [q for q in router.requests if q.action == "promote"]
    assert len(promotes) == 2 and promotes[0].idempotency_key == promotes[1].idempotency_key
    assert {s for s, _ in _outbox(store)} == {"pending"}
    assert await store.load_pending() == {}
    while again.state.active:
        await again.tick()
    assert again.state.phase is Phase.SUCCEEDED
    assert [q.action for q in router.requests][-2:] == ["promote", "route"]
