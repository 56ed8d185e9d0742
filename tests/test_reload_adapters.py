"""Providers and routers across reloads and at stop: kept while unchanged, closed when not.

A real in-process daemon (store, scheduler, supervisor) whose providers and routers are
built by fakes recording ``aclose``; reloads rewrite its config file. See
docs/design.md ("Service") and docs/reliability.md ("A reload never splits a tick").
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from daemons import write_config
from structlog.testing import capture_logs
from support import eventually

from canaryd.config.loader import load_config
from canaryd.config.models import ProviderConfig, RouterConfig
from canaryd.errors import RouterError
from canaryd.http import HttpTransport
from canaryd.routers import Router, RouteRequest
from canaryd.service.daemon import Daemon
from canaryd.service.metrics import InstrumentedRouter
from canaryd.service.runtime import CanaryRunner
from canaryd.testing import FakeProvider, FakeRouter

pytestmark = pytest.mark.anyio

KEY = "prod/web"
GRACE = 0.2
"""The daemon's ``retire_grace`` in these tests (seconds)."""


@dataclass
class HeldRouter(FakeRouter):
    """A fake router whose routes wait while ``held`` is clear (``applying`` says one does)."""

    held: asyncio.Event = field(default_factory=asyncio.Event)
    applying: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        """Routes go through until a test clears ``held``."""
        self.held.set()

    async def apply(self, request: RouteRequest) -> None:
        """Record the route once ``held`` is set (30 s at most)."""
        self.applying.set()
        await asyncio.wait_for(self.held.wait(), 30)
        await super().apply(request)


@dataclass
class Built:
    """Every provider and router the daemon built, by name, in order."""

    providers: dict[str, list[FakeProvider]] = field(default_factory=dict)
    routers: dict[str, list[HeldRouter]] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    """URLs whose router cannot be built (a RouterError, like an unreadable secret)."""

    def provider(self, cfg: ProviderConfig) -> FakeProvider:
        """A new fake provider, remembered under its address."""
        made = FakeProvider()
        self.providers.setdefault(str(getattr(cfg, "address", "")), []).append(made)
        return made

    def router(self, name: str, cfg: RouterConfig, http: HttpTransport) -> Router:
        """A new held router, remembered under its name."""
        if getattr(cfg, "url", None) in self.failing:
            raise RouterError(f"router {name}: cannot be built")
        made = HeldRouter()
        self.routers.setdefault(name, []).append(made)
        return made

    def everything(self) -> list[FakeProvider | FakeRouter]:
        """Every adapter built so far."""
        return [*(p for ps in self.providers.values() for p in ps)] + [
            r for rs in self.routers.values() for r in rs
        ]


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


def _edit(config: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = yaml.safe_load(config.read_text())
    change(data)
    config.write_text(yaml.safe_dump(data, sort_keys=False))


def _router_url(url: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data["routers"]["mesh"].update(url=url)


@dataclass
class Running:
    """A daemon running in the test's task group, its config and what it built."""

    daemon: Daemon
    config: Path
    built: Built
    finished: anyio.Event

    def runner(self) -> CanaryRunner:
        """The canary's loop."""
        runner = self.daemon.runner(KEY)
        assert runner is not None
        return runner

    async def reload(self, change: Callable[[dict[str, Any]], None]) -> bool:
        """Rewrite the config and reload it (what SIGHUP does)."""
        _edit(self.config, change)
        return await self.daemon.reload()


@asynccontextmanager
async def running(tmp_path: Path, **daemon: Any) -> AsyncIterator[Running]:
    """Run a daemon with fake adapters until the block ends; cancel it if still running."""
    built = Built()
    config = write_config(
        tmp_path,
        [_canary()],
        providers={"prom": {"type": "prometheus", "address": "http://127.0.0.1:9"}},
        routers={"mesh": {"type": "webhook", "url": "http://127.0.0.1:9/a"}},
    )
    d = Daemon(
        config,
        load_config(config),
        handle_signals=False,
        provider_factory=built.provider,
        router_factory=built.router,
        **{"retire_grace": GRACE, **daemon},
    )
    finished = anyio.Event()

    async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
        await d.run(task_status=task_status)
        finished.set()

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(15):
            await tg.start(run)
        try:
            yield Running(d, config, built, finished)
        finally:
            tg.cancel_scope.cancel()


def _inner(router: Router) -> Any:
    """The router a metrics wrapper counts."""
    assert isinstance(router, InstrumentedRouter)
    return router.inner


async def _route_in_flight(r: Running) -> HeldRouter:
    """Start a rollout and hold its first route in flight; return the router holding it."""
    router = r.built.routers["mesh"][-1]
    await r.runner().start_rollout("v2", {})
    await eventually(lambda: router.requests, what="the rollout's first route")
    router.held.clear()
    router.applying.clear()
    r.runner().wake()
    await asyncio.wait_for(router.applying.wait(), 10)
    return router


async def test_a_reload_keeps_the_adapters_whose_config_is_unchanged(tmp_path: Path) -> None:
    """A reload that changes neither the router's nor the provider's config keeps both
    instances (counted, never closed), so ticks before and after it share them."""
    async with running(tmp_path) as r:
        router = r.daemon.services.routers["mesh"]
        provider = r.daemon.services.providers["prom"]
        assert await r.reload(lambda data: data["canaries"][0]["analysis"].update(threshold=3))
        await anyio.sleep(GRACE * 3)  # past the grace: a retired one would be closed by now
        assert r.daemon.services.routers["mesh"] is router
        assert r.daemon.services.providers["prom"] is provider
        assert [len(r.built.routers["mesh"]), len(r.built.providers["http://127.0.0.1:9"])] == [
            1,
            1,
        ]
        assert not any(a.closed for a in r.built.everything())
        await r.runner().start_rollout("v2", {})
        sent = await eventually(lambda: r.built.routers["mesh"][0].requests, what="a route")
        counted = r.daemon.metrics.registry.get_sample_value(
            "canaryd_router_requests_total", {"router": "mesh"}
        )
        assert counted == len(sent)  # counted once each: wrapped once, and still counted


async def test_a_replaced_router_is_closed_once_the_tick_using_it_has_ended(
    tmp_path: Path,
) -> None:
    """A router whose config a reload changed stays open past the grace while a tick's
    route through it is in flight, and is closed once that tick has ended."""
    async with running(tmp_path) as r:
        old = await _route_in_flight(r)
        assert await r.reload(_router_url("http://127.0.0.1:9/b"))
        new = r.built.routers["mesh"][-1]
        assert new is not old
        assert _inner(r.daemon.services.routers["mesh"]) is new
        await anyio.sleep(GRACE * 5)  # the grace is over; the tick is not
        assert not old.closed
        old.held.set()
        await eventually(lambda: old.closed, what="the replaced router closed")
        assert [q.canary_weight for q in old.requests] == [25, 50]  # the held one went through
        assert not new.closed


async def test_a_replaced_router_stays_open_for_the_grace(tmp_path: Path) -> None:
    """A router a reload replaced while no tick uses it is closed after the grace, not
    at the reload."""
    async with running(tmp_path, retire_grace=60.0) as r:
        old = r.built.routers["mesh"][0]
        assert await r.reload(_router_url("http://127.0.0.1:9/b"))
        await anyio.sleep(GRACE)
        assert not old.closed
        r.daemon.stop()
        await asyncio.wait_for(r.finished.wait(), 15)
        assert old.closed  # at stop at the latest


async def test_a_removed_canary_keeps_its_router_open_until_its_rollback_went_out(
    tmp_path: Path,
) -> None:
    """A reload that removes a canary with its rollback pending and changes its router
    keeps the old router open while the removed loop retries that rollback through it."""
    async with running(tmp_path) as r:
        old = await _route_in_flight(r)
        old.held.set()
        await eventually(lambda: r.runner().state.canary_weight == 25, what="weight 25")
        old.down = True
        provider = r.built.providers["http://127.0.0.1:9"][0]
        provider.values = [1.0]  # failing checks: the rollback comes at threshold 2
        loop = r.runner()
        for failed in (1, 2):
            loop.wake()
            await eventually(lambda: loop.state.failed_checks >= failed)  # noqa: B023
        await eventually(lambda: loop.state.route_pending, what="the rollback pending")

        def remove(data: dict[str, Any]) -> None:
            data["canaries"] = []
            data["routers"]["mesh"]["url"] = "http://127.0.0.1:9/b"

        assert await r.reload(remove)
        await anyio.sleep(GRACE * 5)
        assert not old.closed
        old.down = False
        loop.wake()
        await eventually(lambda: old.closed, what="the old router closed after the rollback")
        assert old.requests[-1].action == "rollback"


async def test_stop_closes_every_provider_and_router(tmp_path: Path) -> None:
    """A graceful stop closes every adapter built: in force, and replaced but still
    within its grace."""
    async with running(tmp_path, retire_grace=60.0) as r:

        def change(data: dict[str, Any]) -> None:
            data["routers"]["mesh"]["url"] = "http://127.0.0.1:9/b"
            data["providers"]["prom"]["address"] = "http://127.0.0.1:10"

        assert await r.reload(change)
        assert not any(a.closed for a in r.built.everything())
        r.daemon.stop()
        await asyncio.wait_for(r.finished.wait(), 15)
        built = r.built.everything()
        assert len(built) == 4
        assert all(a.closed for a in built)


async def test_a_failing_close_is_logged_and_the_stop_completes(tmp_path: Path) -> None:
    """A router whose close raises and a provider whose close hangs do not stop the stop:
    both are logged as adapter.close_failed."""
    async with running(tmp_path) as r:
        router = r.built.routers["mesh"][0]
        provider = r.built.providers["http://127.0.0.1:9"][0]

        async def raising() -> None:
            raise OSError("socket gone")

        async def hanging() -> None:
            await anyio.sleep_forever()

        router.aclose = raising  # type: ignore[method-assign]
        provider.aclose = hanging  # type: ignore[method-assign]
        with capture_logs() as logs:
            r.daemon.stop()
            await asyncio.wait_for(r.finished.wait(), 15)
    failed = {
        (e["kind"], e["name"], e["error"]) for e in logs if e["event"] == "adapter.close_failed"
    }
    assert failed == {
        ("router", "mesh", "OSError: socket gone"),
        ("provider", "prom", "not closed within 1s"),
    }


async def test_adapters_built_for_a_rejected_config_are_closed(tmp_path: Path) -> None:
    """A reload rejected because a router cannot be built keeps the adapters in force and
    closes the provider it had built for that config."""
    async with running(tmp_path) as r:
        r.built.failing.add("http://127.0.0.1:9/bad")

        def change(data: dict[str, Any]) -> None:
            data["routers"]["mesh"]["url"] = "http://127.0.0.1:9/bad"
            data["providers"]["prom"]["address"] = "http://127.0.0.1:10"

        assert not await r.reload(change)
        unused = r.built.providers["http://127.0.0.1:10"][0]
        assert _inner(r.daemon.services.routers["mesh"]) is r.built.routers["mesh"][0]

        def back(data: dict[str, Any]) -> None:
            data["routers"]["mesh"]["url"] = "http://127.0.0.1:9/c"
            data["providers"]["prom"]["address"] = "http://127.0.0.1:9"

        assert await r.reload(back)  # the provider in force is kept, the unused one closed
        await eventually(lambda: unused.closed, what="the unused provider closed")
        assert not r.built.providers["http://127.0.0.1:9"][0].closed


async def test_a_reload_after_a_secret_rotation_builds_the_router_anew(tmp_path: Path) -> None:
    """A router whose secret file changed is built again by a reload (it reads the secret
    when built), though its config is unchanged."""
    secret = tmp_path / "router-secret"
    secret.write_text("first")
    secret.chmod(0o600)
    async with running(tmp_path) as r:
        assert await r.reload(lambda data: data["routers"]["mesh"].update(secret_file=str(secret)))
        signing = r.daemon.services.routers["mesh"]
        assert await r.reload(lambda data: None)
        assert r.daemon.services.routers["mesh"] is signing
        secret.write_text("second")
        assert await r.reload(lambda data: None)
        assert r.daemon.services.routers["mesh"] is not signing
        assert len(r.built.routers["mesh"]) == 3
