"""The runtime with a router that refuses: holds, pending rollbacks and promotions, the lease."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from runtime_helpers import outbox, runner, settings

from canaryd.config import Settings
from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState, Phase
from canaryd.errors import CommandError, FencedError, RouterError
from canaryd.http import HttpTransport
from canaryd.routers import RouteRequest
from canaryd.service.store import StateStore
from canaryd.testing import FakeProvider, FakeRouter

pytestmark = pytest.mark.anyio


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
