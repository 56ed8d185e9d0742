"""A canary removed by a reload while its tick is in flight: what that tick leaves pending is
said and handled as if it had been pending at removal (docs/reliability.md, "A canary removed
with a rollback pending").

One runner with in-memory fakes; the provider holds the tick's answer until the test has
removed the canary.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import structlog
from runtime_helpers import settings
from test_reload_race import HeldProvider

from canaryd.core.analysis import CanaryState, Phase
from canaryd.http import HttpTransport
from canaryd.service.runtime import CanaryRunner
from canaryd.service.services import Services
from canaryd.testing import FakeRouter, FakeStore

pytestmark = pytest.mark.anyio


def _runner(tmp_path: Path, session: HttpTransport, provider: HeldProvider) -> CanaryRunner:
    """prod/web (threshold 1, 25 % steps up to 50 %) on a fake router and store."""
    cfg = settings(tmp_path, threshold=1)
    services = Services(
        cfg, session, {"prom": provider}, {"lb": FakeRouter()}, FakeStore(), clock=lambda: 1000.0
    )
    return CanaryRunner(cfg.canaries[0], CanaryState(), services)


def _router(runner: CanaryRunner) -> FakeRouter:
    """The runner's fake router."""
    router = runner.services.routers["lb"]
    assert isinstance(router, FakeRouter)
    return router


async def _removed_mid_tick(
    runner: CanaryRunner, value: float, drained: Callable[[], None]
) -> Awaitable[None]:
    """Start a tick whose check answers ``value`` with the router down, remove the canary
    while the tick waits for that answer, let the tick end; return when it has."""
    provider = runner.services.providers["prom"]
    assert isinstance(provider, HeldProvider)
    provider.value, _router(runner).down = value, True
    provider.held.clear()
    provider.asked.clear()
    tick = asyncio.ensure_future(runner.tick())
    await asyncio.wait_for(provider.asked.wait(), 10)
    assert runner.retire(on_drained=drained)  # keeps ticking: a tick is in flight
    provider.held.set()
    return tick


def _events(logs: Sequence[Mapping[str, Any]], name: str) -> list[Mapping[str, Any]]:
    """The captured log lines of event ``name``."""
    return [e for e in logs if e["event"] == name]


async def test_a_rollback_left_pending_by_the_tick_in_flight_is_said_and_retried(
    tmp_path: Path, session: HttpTransport
) -> None:
    """A tick in flight at removal that ends with its rollback refused logs
    ``reload.rollback_pending`` once; the removed loop retries the rollback until applied."""
    provider = HeldProvider()
    provider.held.set()
    runner = _runner(tmp_path, session, provider)
    drained: list[bool] = []
    await runner.start_rollout("v2", {})
    await runner.tick()  # 0 -> 25
    with structlog.testing.capture_logs() as logs:
        await (await _removed_mid_tick(runner, 1.0, lambda: drained.append(True)))
        assert (runner.state.phase, runner.state.route_pending) == (Phase.FAILED, True)
        await runner.tick()  # refused again
        _router(runner).down = False
        await runner.tick()  # applied
    assert len(_events(logs, "reload.rollback_pending")) == 1, logs
    assert len(_events(logs, "reload.rollback_applied")) == 1, logs
    assert [r.action for r in _router(runner).requests][-1] == "rollback"
    assert drained == [True] and not runner.state.route_pending


async def test_a_promote_left_pending_by_the_tick_in_flight_is_said_and_not_retried(
    tmp_path: Path, session: HttpTransport
) -> None:
    """A tick in flight at removal that ends with its promote refused logs
    ``reload.promote_abandoned``; the removed loop does not send the promote again."""
    provider = HeldProvider(value=99.9)
    provider.held.set()
    runner = _runner(tmp_path, session, provider)
    drained: list[bool] = []
    await runner.start_rollout("v2", {})
    while runner.state.canary_weight < 50:  # 0 -> 25 -> 50: the next passing check promotes
        await runner.tick()
    with structlog.testing.capture_logs() as logs:
        await (await _removed_mid_tick(runner, 99.9, lambda: drained.append(True)))
        assert (runner.state.phase, runner.state.route_pending) == (Phase.PROMOTING, True)
        _router(runner).down = False
        sent = len(_router(runner).requests)
        await runner.tick()
        await runner.tick()
    abandoned = _events(logs, "reload.promote_abandoned")
    assert len(abandoned) == 1 and abandoned[0]["revision"] == "v2", logs
    assert _router(runner).requests[sent:] == []
    assert drained == [True] and runner.state.route_pending
