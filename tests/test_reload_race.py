"""A canary removed and added back by two reloads while its old loop's tick is in flight.

A real in-process daemon (its API, store and webhook router client) with a
provider stand-in whose answers the test holds back, so the old loop's tick is
still in flight across both reloads. See docs/reliability.md ("A reload never
splits a tick").
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from daemons import write_config
from faults import DedupRouter, StandIn
from support import eventually

from canaryd.config.loader import load_config
from canaryd.core.analysis import CanaryState, Phase
from canaryd.service.daemon import Daemon
from canaryd.service.runtime import CanaryRunner

pytestmark = pytest.mark.anyio

KEY = "prod/web"


@dataclass
class HeldProvider:
    """Answers ``value`` as it was when asked; while ``held`` is clear, answers wait for it."""

    value: float = 90.0
    held: asyncio.Event = field(default_factory=asyncio.Event)
    asked: asyncio.Event = field(default_factory=asyncio.Event)

    async def query(self, query: str, *, budget: float) -> float | None:
        """Answer, once not held, the value set when asked."""
        value = self.value
        self.asked.set()
        await asyncio.wait_for(self.held.wait(), 30)
        return value

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Unused."""
        return []

    async def aclose(self) -> None:
        """Nothing to release."""


def _canary() -> dict[str, Any]:
    return {
        "name": "web",
        "namespace": "prod",
        "target": "web-canary",
        "router": "mesh",
        "provider": "prom",
        "analysis": {
            "interval": "1h",  # the test wakes the loop; the cadence never ticks it
            "threshold": 2,
            "stepWeight": 25,
            "maxWeight": 50,
            "metrics": [{"name": "sr", "query": "sr", "thresholdRange": {"min": 99}}],
        },
    }


def _set_canaries(config: Path, canaries: list[dict[str, Any]]) -> None:
    data = yaml.safe_load(config.read_text())
    data["canaries"] = canaries
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def _runner(daemon: Daemon) -> CanaryRunner:
    runner = daemon.runner(KEY)
    assert runner is not None
    return runner


async def _state(daemon: Daemon) -> CanaryState:
    return _runner(daemon).state


@pytest.mark.slow
async def test_a_canary_added_back_mid_tick_continues_from_that_ticks_decision(
    tmp_path: Path,
) -> None:
    """Removed and re-added while its tick is in flight, a canary continues from what that tick
    decided (here: the rollback), never from the state read before it."""
    provider = HeldProvider()
    provider.held.set()
    async with StandIn() as server, anyio.create_task_group() as tg:
        router = DedupRouter(server)
        config = write_config(
            tmp_path,
            [_canary()],
            providers={"prom": {"type": "prometheus", "address": "http://127.0.0.1:9"}},
            routers={"mesh": {"type": "webhook", "url": f"{server.url}/routes"}},
        )
        daemon = Daemon(
            config, load_config(config), handle_signals=False, provider_overrides={"prom": provider}
        )
        with anyio.fail_after(15):
            await tg.start(daemon.run)
        await _runner(daemon).start_rollout("v2", {})  # wakes it: 0 -> 25
        await eventually(lambda: _state(daemon), lambda s: s.canary_weight == 25)
        _runner(daemon).wake()  # failed check 1 of 2
        await eventually(lambda: _state(daemon), lambda s: s.failed_checks == 1)
        provider.held.clear()
        provider.asked.clear()
        _runner(daemon).wake()  # failed check 2 of 2: the rollback, held in flight
        await asyncio.wait_for(provider.asked.wait(), 10)
        _set_canaries(config, [])
        assert await daemon.reload()
        _set_canaries(config, [_canary()])
        assert await daemon.reload()
        provider.value = 99.9  # from now on the canary would pass its checks
        provider.held.set()
        back = _runner(daemon)
        with anyio.fail_after(20):
            while back.state.active:
                back.wake()  # no-op once the rollout has ended
                await anyio.sleep(0.1)
        for _ in range(3):  # and a few ticks more: nothing may move after the verdict
            back.wake()
            await anyio.sleep(0.2)
        state = back.state
        stored = (await daemon.services.store.load_states())[KEY]
        tg.cancel_scope.cancel()
    assert (state.phase, state.failed_checks) == (Phase.FAILED, 2), state
    assert (stored.phase, stored.failed_checks) == (Phase.FAILED, 2), stored
    assert router.applied[KEY] == (100, 0), "traffic went back to the rolled-back canary"
    routes = [r for r in server.requests if r.path == "/routes"]
    assert routes and b'"rollback"' in routes[-1].body, [r.body for r in routes]
