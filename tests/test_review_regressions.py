"""Wrong recorded state found by hostile testing of the trust work (issues #12, #13)."""

from __future__ import annotations

from pathlib import Path

import pytest
from daemons import client_for, daemon_process, wait_for_state
from runtime_helpers import runner, settings
from service_helpers import backends, canary, service_config
from support import eventually

from canaryd.core import analysis as core
from canaryd.core.analysis import Phase
from canaryd.errors import CommandError
from canaryd.http import HttpTransport
from canaryd.routers import RouteRequest
from canaryd.service.store import SqliteStore
from canaryd.testing import FakeProvider, FakeRouter


class Died(Exception):  # noqa: N818 - the daemon's death, not an error of canaryd
    """The daemon died (``kill -9``) while waiting for the router's answer."""


class DiesAfterApplying(FakeRouter):
    """Applies the first route, then the daemon dies before hearing the answer."""

    async def apply(self, request: RouteRequest) -> None:
        """Apply, then die once."""
        await super().apply(request)
        if len(self.requests) == 1:
            raise Died


@pytest.mark.anyio
async def test_a_command_after_a_restart_is_not_overwritten_by_the_routes_resent(
    tmp_path: Path, store: SqliteStore, session: HttpTransport
) -> None:
    """A pause recorded after a restart stays recorded when the recorded routes are resent."""
    cfg = settings(tmp_path)
    first = runner(cfg, store, session, FakeProvider(), DiesAfterApplying())
    await first.start_rollout("v2", {})
    with pytest.raises(Died):
        await first.tick()  # 0 -> 25 recorded, applied, then the daemon dies
    router = FakeRouter()
    states, pending = await store.load_states(), await store.load_pending()
    second = runner(cfg, store, session, FakeProvider(), router, states["prod/web"])
    second.restore(pending.get("prod/web"))
    await second.command(lambda s, now: core.pause(second.spec, s, now), interrupt=True)
    await second.tick()  # resends the recorded 25 %, then nothing (paused)
    assert [r.canary_weight for r in router.requests] == [25]
    stored = (await store.load_states())["prod/web"]
    assert stored.phase is Phase.PAUSED, stored
    assert stored == second.state


@pytest.mark.parametrize("phase", [Phase.PROMOTING, Phase.FINALISING])
def test_promote_refuses_a_promotion_paused_under_way(phase: Phase, tmp_path: Path) -> None:
    """Promoting a rollout paused while promoting is refused, not begun again."""
    spec = settings(tmp_path).canaries[0]
    state = core.start_rollout(spec, core.CanaryState(), "v2", {}, "r1", 0.0).state
    state = core.evolve(state, phase=phase, canary_weight=50, primary_weight=50)
    paused = core.pause(spec, state, 1.0).state
    for force in (False, True):
        with pytest.raises(CommandError, match="resume"):
            core.promote(spec, paused, 2.0, force=force)


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
@pytest.mark.anyio
async def test_a_pause_between_a_restart_and_the_resend_survives_the_next_restart(
    tmp_path: Path,
) -> None:
    """canaryd run killed while the router holds an advance: a pause made after the
    restart is still in force after the resend and another kill -9."""
    async with backends() as (prom, router):
        router.delay = 30.0  # the advance's route is held: the daemon dies waiting for it
        cfg = service_config(tmp_path, prom, router, [canary(interval="10s")])
        log = tmp_path / "daemon.log"
        async with client_for(cfg) as client:
            with daemon_process(cfg, log):
                await eventually(lambda: client.get(""), lambda v: True, within=20)
                await client.post("prod/web/rollouts", {"revision": "v2"})
                await router.wait_for(1)  # 0 -> 10 % recorded, sent; then kill -9
            router.delay = 0.0
            with daemon_process(cfg, log):  # its first tick comes ~7 s later, or on a command
                await eventually(lambda: client.get(""), lambda v: True, within=20)
                await client.post("prod/web/pause", {})  # recorded, then wakes the tick
                sent = await router.wait_for(2)  # the recorded route, sent again
                assert sent[1].json["canaryWeight"] == 10
                await wait_for_state(client, "prod/web", lambda s: s["phase"] == "Paused")
            with daemon_process(cfg, log):
                await eventually(lambda: client.get(""), lambda v: True, within=20)
                state = await client.get("prod/web")
    assert state["phase"] == "Paused", state
    assert state["canaryWeight"] == 10, state


class DiesBeforeTheStep(FakeRouter):
    """Applies routes until the first promotion step, where the daemon dies before it."""

    async def apply(self, request: RouteRequest) -> None:
        """Die once on the route after ``promote``; refuse while ``down``."""
        promoted = any(r.action == "promote" for r in self.requests)
        if promoted and not getattr(self, "died", False):
            self.died = True
            raise Died
        await super().apply(request)


@pytest.mark.anyio
async def test_a_refused_promotion_step_on_a_paused_promotion_never_rolls_back(
    tmp_path: Path, store: SqliteStore, session: HttpTransport
) -> None:
    """After kill -9 mid-promotion and a pause, a refused resend is no failed check, no rollback."""
    cfg = settings(tmp_path, threshold=1)
    router = DiesBeforeTheStep()
    first = runner(cfg, store, session, FakeProvider(), router)
    await first.start_rollout("v2", {})
    for _ in range(3):  # 25, 50, promote
        await first.tick()
    with pytest.raises(Died):
        await first.tick()  # the step to the primary, recorded: dies before sending it
    states, pending = await store.load_states(), await store.load_pending()
    second = runner(cfg, store, session, FakeProvider(), router, states["prod/web"])
    second.restore(pending.get("prod/web"))
    router.down = True
    await second.command(lambda s, now: core.pause(second.spec, s, now))
    await second.tick()  # the recorded step sent again, refused
    assert second.state.phase is Phase.PAUSED, second.state
    assert second.state.failed_checks == 0
    assert all(r.action != "rollback" for r in router.requests)
    events = [e["event"] for e in await store.events("prod/web")]
    assert "rollout.rolled_back" not in events and "rollback.pending" not in events
