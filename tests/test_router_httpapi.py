"""Rules the API-driven routers share, against a small fake admin API: redirects, retries, reads."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
from aiohttp import web

from canaryd.config import CaddyRouter
from canaryd.errors import RouterError
from canaryd.http import HttpTransport, make_transport
from canaryd.routers import RouteRequest
from canaryd.routers.caddy import CaddyAdmin

pytestmark = pytest.mark.anyio

UPSTREAMS = [{"dial": "10.0.0.1:80"}, {"dial": "10.0.0.2:80"}]


def route(primary: int = 80, canary: int = 20) -> RouteRequest:
    """A route request for prod/web."""
    return RouteRequest("prod/web", "v2", "route", primary, canary, idempotency_key="key-1")


class FakeCaddy:
    """Caddy's admin API for one handler, with a hook deciding each PATCH's answer."""

    def __init__(self, on_patch: Callable[[dict[str, Any]], web.StreamResponse | None]) -> None:
        """Start with weights 100/0; ``on_patch`` may answer instead of storing."""
        self.policy: dict[str, Any] = {"policy": "weighted_round_robin", "weights": [100, 0]}
        self.patches = 0
        self.on_patch = on_patch

    async def upstreams(self, request: web.Request) -> web.Response:
        """``GET /id/web/upstreams``."""
        return web.json_response(UPSTREAMS)

    async def get_policy(self, request: web.Request) -> web.Response:
        """``GET /id/web/load_balancing/selection_policy``."""
        return web.json_response(self.policy)

    async def patch_policy(self, request: web.Request) -> web.StreamResponse:
        """``PATCH`` of the policy: ``on_patch`` answers, or the body is stored."""
        self.patches += 1
        body = await request.json()
        answer = self.on_patch(body)
        if answer is not None:
            return answer
        self.policy = body
        return web.Response(status=200)


@asynccontextmanager
async def serve(fake: FakeCaddy) -> AsyncIterator[CaddyRouter]:
    """Serve ``fake`` on 127.0.0.1; yield a caddy router config pointing at it."""
    app = web.Application()
    app.router.add_get("/id/web/upstreams", fake.upstreams)
    app.router.add_get("/id/web/load_balancing/selection_policy", fake.get_policy)
    app.router.add_patch("/id/web/load_balancing/selection_policy", fake.patch_policy)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    admin = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield CaddyRouter(
            type="caddy", admin=admin, handler="web", primary="10.0.0.1:80", canary="10.0.0.2:80"
        )
    finally:
        await runner.cleanup()


@pytest.fixture
async def session(anyio_backend: str) -> AsyncIterator[HttpTransport]:
    """A client session for canaryd's router."""
    async with make_transport() as client:
        yield client


async def test_same_weights_twice_patch_once(session: HttpTransport) -> None:
    """Weights already in force are not written again (no config reload)."""
    fake = FakeCaddy(lambda body: None)
    async with serve(fake) as cfg:
        router = CaddyAdmin(cfg, session)
        await router.apply(route())
        await router.apply(route())

    assert fake.patches == 1
    assert fake.policy["weights"] == [80, 20]


async def test_redirect_is_not_followed(session: HttpTransport) -> None:
    """A 3xx answer is an error naming where it points; the redirect is not followed."""
    location = {"Location": "https://sso.example/login?token=t"}
    fake = FakeCaddy(lambda body: web.Response(status=302, headers=location))
    async with serve(fake) as cfg:
        with pytest.raises(RouterError) as info:
            await CaddyAdmin(cfg, session).apply(route())

    assert str(info.value) == (
        "caddy web: HTTP 302 redirect to https://sso.example/… (redirects are not followed)"
    )
    assert fake.patches == 1


async def test_refused_config_is_quoted_and_not_retried(session: HttpTransport) -> None:
    """Caddy's 500 for a config it refuses is its final word: quoted, sent once."""
    refusal = '{"error":"loading new config: invalid configuration"}'
    fake = FakeCaddy(lambda body: web.Response(status=500, text=refusal))
    async with serve(fake) as cfg:
        with pytest.raises(RouterError) as info:
            await CaddyAdmin(cfg, session).apply(route())

    assert str(info.value) == f"caddy web: HTTP 500: {refusal}"
    assert fake.patches == 1


async def test_read_back_mismatch_is_an_error(session: HttpTransport) -> None:
    """A PATCH that is accepted but not in force afterwards is an error naming both."""
    fake = FakeCaddy(lambda body: web.Response(status=200))  # accepted, not stored
    async with serve(fake) as cfg:
        with pytest.raises(RouterError) as info:
            await CaddyAdmin(cfg, session).apply(route())

    assert str(info.value) == "caddy web: weights are [100, 0] after setting [80, 20]"


async def test_overload_answer_is_retried(session: HttpTransport) -> None:
    """A 429 is retried; the next attempt's success counts."""
    answers = [web.Response(status=429, text="slow down")]
    fake = FakeCaddy(lambda body: answers.pop() if answers else None)
    async with serve(fake) as cfg:
        await CaddyAdmin(cfg, session).apply(route())

    assert fake.patches == 2
    assert fake.policy["weights"] == [80, 20]
