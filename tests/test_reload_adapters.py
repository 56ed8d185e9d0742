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
from service_helpers import canary
from structlog.testing import capture_logs
from support import eventually
from test_signals import Running, running

from canaryd.config.models import ProviderConfig, RouterConfig
from canaryd.errors import RouterError
from canaryd.http import HttpTransport
from canaryd.routers import Router, RouteRequest
from canaryd.service.metrics import InstrumentedRouter
from canaryd.service.runtime import CanaryRunner
from canaryd.testing import FakeProvider, FakeRouter

pytestmark = pytest.mark.anyio

KEY = "prod/web"
GRACE = 0.2
"""The daemon's ``retire_grace`` in these tests (seconds)."""

Config = dict[str, Any]


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
    """Every provider and router the daemon built, in order."""

    providers: list[FakeProvider] = field(default_factory=list)
    routers: list[HeldRouter] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)
    """URLs whose router cannot be built (a RouterError, like an unreadable secret)."""

    def provider(self, cfg: ProviderConfig) -> FakeProvider:
        """A new fake provider."""
        self.providers.append(FakeProvider())
        return self.providers[-1]

    def router(self, name: str, cfg: RouterConfig, http: HttpTransport) -> Router:
        """A new held router (or a RouterError for a URL in :attr:`failing`)."""
        if getattr(cfg, "url", None) in self.failing:
            raise RouterError(f"router {name}: cannot be built")
        self.routers.append(HeldRouter())
        return self.routers[-1]

    def everything(self) -> list[FakeProvider | FakeRouter]:
        """Every adapter built so far."""
        return [*self.providers, *self.routers]


def _change(url: str | None = None, address: str | None = None) -> Callable[[Config], None]:
    """An edit of the config: the router's URL, the provider's address."""

    def edit(data: Config) -> None:
        if url is not None:
            data["routers"]["lb"]["url"] = url
        if address is not None:
            data["providers"]["prom"]["address"] = address

    return edit


async def _reload(r: Running, change: Callable[[Config], None]) -> bool:
    """Rewrite the config and reload it (what SIGHUP does)."""
    r.rewrite(change)
    return await r.daemon.reload()


def _runner(r: Running) -> CanaryRunner:
    runner = r.daemon.runner(KEY)
    assert runner is not None
    return runner


@asynccontextmanager
async def faked(tmp_path: Path, **daemon: Any) -> AsyncIterator[tuple[Running, Built]]:
    """Run a daemon whose adapters are fakes until the block ends (test_signals.running)."""
    built = Built()
    spec = canary(interval="1h", threshold=2, stepWeight=25, maxWeight=50)  # ticks when woken
    options = {"retire_grace": GRACE, **daemon}
    async with running(
        tmp_path, [spec], provider_factory=built.provider, router_factory=built.router, **options
    ) as r:
        yield r, built


def _inner(router: Router) -> Any:
    """The router a metrics wrapper counts."""
    assert isinstance(router, InstrumentedRouter)
    return router.inner


async def _route_in_flight(r: Running, built: Built) -> HeldRouter:
    """Start a rollout and hold its second route in flight; return the router holding it."""
    router = built.routers[-1]
    await _runner(r).start_rollout("v2", {})
    await eventually(lambda: router.requests, what="the rollout's first route")
    router.held.clear()
    router.applying.clear()
    _runner(r).wake()
    await asyncio.wait_for(router.applying.wait(), 10)
    return router


async def _stop(r: Running) -> None:
    r.daemon.stop()
    await asyncio.wait_for(r.finished.wait(), 15)


async def test_a_reload_keeps_the_adapters_whose_config_is_unchanged(tmp_path: Path) -> None:
    """A reload that changes neither the router's nor the provider's config keeps both
    instances (counted once, never closed), so ticks before and after it share them."""
    async with faked(tmp_path) as (r, built):
        router, provider = r.daemon.services.routers["lb"], r.daemon.services.providers["prom"]
        assert await _reload(r, lambda data: data["canaries"][0]["analysis"].update(threshold=3))
        await anyio.sleep(GRACE * 3)  # past the grace: a retired one would be closed by now
        assert r.daemon.services.routers["lb"] is router
        assert r.daemon.services.providers["prom"] is provider
        assert (len(built.routers), len(built.providers)) == (1, 1)
        assert not any(a.closed for a in built.everything())
        await _runner(r).start_rollout("v2", {})
        sent = await eventually(lambda: built.routers[0].requests, what="a route")
        counted = r.daemon.metrics.registry.get_sample_value(
            "canaryd_router_requests_total", {"router": "lb"}
        )
        assert counted == len(sent)  # counted once each: wrapped once, and still counted


async def test_a_replaced_router_is_closed_once_the_tick_using_it_has_ended(
    tmp_path: Path,
) -> None:
    """A router whose config a reload changed stays open past the grace while a tick's
    route through it is in flight, and is closed once that tick has ended."""
    async with faked(tmp_path) as (r, built):
        old = await _route_in_flight(r, built)
        assert await _reload(r, _change(url="http://127.0.0.1:9/b"))
        new = built.routers[-1]
        assert new is not old
        assert _inner(r.daemon.services.routers["lb"]) is new
        await anyio.sleep(GRACE * 5)  # the grace is over; the tick is not
        assert not old.closed
        old.held.set()
        await eventually(lambda: old.closed, what="the replaced router closed")
        assert [q.canary_weight for q in old.requests] == [25, 50]  # the held one went through
        assert not new.closed


async def test_a_replaced_router_stays_open_for_the_grace(tmp_path: Path) -> None:
    """A router a reload replaced while no tick uses it is not closed at the reload but
    after the grace, or at stop at the latest."""
    async with faked(tmp_path, retire_grace=60.0) as (r, built):
        old = built.routers[0]
        assert await _reload(r, _change(url="http://127.0.0.1:9/b"))
        await anyio.sleep(GRACE)
        assert not old.closed
        await _stop(r)
        assert old.closed


async def test_a_removed_canary_keeps_its_router_open_until_its_rollback_went_out(
    tmp_path: Path,
) -> None:
    """A reload that removes a canary with its rollback pending and changes its router
    keeps the old router open while the removed loop retries that rollback through it."""
    async with faked(tmp_path) as (r, built):
        old = built.routers[0]
        loop = _runner(r)
        await loop.start_rollout("v2", {})
        await eventually(lambda: loop.state.canary_weight == 25, what="weight 25")
        old.down = True
        built.providers[0].values = [1.0]  # failing checks: the rollback comes at threshold 2
        for failed in (1, 2):
            loop.wake()
            await eventually(lambda: loop.state.failed_checks >= failed)  # noqa: B023
        await eventually(lambda: loop.state.route_pending, what="the rollback pending")

        def remove(data: Config) -> None:
            data["canaries"] = []
            _change(url="http://127.0.0.1:9/b")(data)

        assert await _reload(r, remove)
        await anyio.sleep(GRACE * 5)
        assert not old.closed
        old.down = False
        loop.wake()
        await eventually(lambda: old.closed, what="the old router closed after the rollback")
        assert old.requests[-1].action == "rollback"


async def test_stop_closes_every_provider_and_router(tmp_path: Path) -> None:
    """A graceful stop closes every adapter built: in force, and replaced but still
    within its grace."""
    async with faked(tmp_path, retire_grace=60.0) as (r, built):
        assert await _reload(r, _change("http://127.0.0.1:9/b", "http://127.0.0.1:10"))
        assert not any(a.closed for a in built.everything())
        await _stop(r)
        assert len(built.everything()) == 4
        assert all(a.closed for a in built.everything())


async def test_a_failing_close_is_logged_and_the_stop_completes(tmp_path: Path) -> None:
    """A router whose close raises and a provider whose close hangs do not stop the stop:
    both are logged as adapter.close_failed."""
    async with faked(tmp_path) as (r, built):

        async def raising() -> None:
            raise OSError("socket gone")

        async def hanging() -> None:
            await anyio.sleep_forever()

        built.routers[0].aclose = raising  # type: ignore[method-assign]
        built.providers[0].aclose = hanging  # type: ignore[method-assign]
        with capture_logs() as logs:
            await _stop(r)
    failed = {
        (e["kind"], e["name"], e["error"]) for e in logs if e["event"] == "adapter.close_failed"
    }
    assert failed == {
        ("router", "lb", "OSError: socket gone"),
        ("provider", "prom", "not closed within 1s"),
    }


async def test_adapters_built_for_a_rejected_config_are_closed(tmp_path: Path) -> None:
    """A reload rejected because a router cannot be built keeps the adapters in force and
    closes the provider it had built for that config with the next accepted one."""
    async with faked(tmp_path) as (r, built):
        built.failing.add("http://127.0.0.1:9/bad")
        assert not await _reload(r, _change("http://127.0.0.1:9/bad", "http://127.0.0.1:10"))
        first, unused = built.providers
        assert _inner(r.daemon.services.routers["lb"]) is built.routers[0]
        assert await _reload(r, _change("http://127.0.0.1:9/c", r.prom.url))
        assert r.daemon.services.providers["prom"] is not unused  # the one in force is kept
        await eventually(lambda: unused.closed, what="the unused provider closed")
        assert not first.closed


async def test_a_reload_after_a_secret_rotation_builds_the_router_anew(tmp_path: Path) -> None:
    """A router whose secret file changed is built again by a reload (it reads the secret
    when built), though its config is unchanged."""
    secret = tmp_path / "router-secret"
    secret.write_text("first")
    secret.chmod(0o600)
    async with faked(tmp_path) as (r, built):
        assert await _reload(r, lambda data: data["routers"]["lb"].update(secret_file=str(secret)))
        signing = r.daemon.services.routers["lb"]
        assert await _reload(r, lambda data: None)
        assert r.daemon.services.routers["lb"] is signing
        secret.write_text("second")
        assert await _reload(r, lambda data: None)
        assert r.daemon.services.routers["lb"] is not signing
        assert len(built.routers) == 3
