"""The NGINX Plus API router against a fake that gives the API's documented answers.

NGINX Plus is not free software, so the fake stands in for it: ``GET
/api/9/http/upstreams/{name}/servers`` lists the servers, ``PATCH
.../servers/{id}`` changes ``weight``/``down`` and answers the server; errors
are ``{"error": {"status", "text", "code"}, "request_id", "href"}`` with the
documented codes (``UpstreamNotFound``, ``MethodDisabled``, ``UpstreamBadWeight``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from traffic import route

from canaryd.config import NginxRouter
from canaryd.errors import RouterError
from canaryd.http import HttpTransport
from canaryd.routers import build_router
from canaryd.routers.nginx_plus import NginxPlusRouter


def error(status: int, text: str, code: str) -> web.Response:
    """The API's documented error answer."""
    body = {
        "error": {"status": status, "text": text, "code": code},
        "request_id": "0123456789abcdef",
        "href": "https://nginx.org/en/docs/http/ngx_http_api_module.html",
    }
    return web.json_response(body, status=status)


@dataclass
class FakePlus:
    """Upstream ``web``: two primary servers and one canary, weight 1, none down."""

    write: bool = True
    fail_next_patch: int = 0
    refuse_patch: int = 0
    """Answer the Nth PATCH from now on (1-based) with MethodDisabled; 0: never."""
    servers: list[dict[str, Any]] = field(
        default_factory=lambda: [
            {"id": 0, "server": "10.0.0.11:8080", "weight": 1, "down": False, "backup": False},
            {"id": 1, "server": "10.0.0.12:8080", "weight": 1, "down": False, "backup": False},
            {"id": 2, "server": "10.0.0.21:8080", "weight": 1, "down": False, "backup": False},
        ]
    )
    patches: list[tuple[int, dict[str, Any]]] = field(default_factory=list)

    async def list_servers(self, request: web.Request) -> web.Response:
        """GET /api/9/http/upstreams/{name}/servers."""
        if request.match_info["name"] != "web":
            return error(404, "upstream not found", "UpstreamNotFound")
        return web.json_response(self.servers)

    async def patch_server(self, request: web.Request) -> web.Response:
        """PATCH /api/9/http/upstreams/{name}/servers/{id}."""
        if self.fail_next_patch:
            self.fail_next_patch -= 1
            return web.Response(status=502, text="bad gateway")
        if self.refuse_patch:
            self.refuse_patch -= 1
            if not self.refuse_patch:
                return error(405, "method disabled", "MethodDisabled")
        if not self.write:
            return error(405, "method disabled", "MethodDisabled")
        server = next((s for s in self.servers if str(s["id"]) == request.match_info["id"]), None)
        if server is None:
            return error(404, "server not found", "UpstreamServerNotFound")
        change = await request.json()
        if "weight" in change and not 1 <= change["weight"] <= 1_000_000:
            return error(400, 'invalid "weight"', "UpstreamBadWeight")
        server.update(change)
        self.patches.append((server["id"], change))
        return web.json_response(server)

    def weights(self) -> dict[str, tuple[int, bool]]:
        """Every server's (weight, down)."""
        return {s["server"]: (s["weight"], s["down"]) for s in self.servers}


@pytest.fixture
async def plus() -> AsyncIterator[tuple[FakePlus, str]]:
    """The fake API on 127.0.0.1; yields it and its ``/api/9`` base URL."""
    fake = FakePlus()
    app = web.Application()
    app.router.add_get("/api/9/http/upstreams/{name}/servers", fake.list_servers)
    app.router.add_patch("/api/9/http/upstreams/{name}/servers/{id}", fake.patch_server)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield fake, f"http://127.0.0.1:{runner.addresses[0][1]}/api/9"
    finally:
        await runner.cleanup()


def config(api: str, **override: Any) -> NginxRouter:
    """An ``nginx`` router entry using the API for upstream ``web``."""
    entry: dict[str, Any] = {
        "type": "nginx",
        "api": api,
        "upstream": "web",
        "primary": ["10.0.0.11:8080", "10.0.0.12:8080"],
        "canary": "10.0.0.21:8080",
        "timeout": 2.0,
    }
    return NginxRouter.model_validate(entry | override)


@pytest.mark.anyio
async def test_weights_follow_the_split_and_zero_is_down(
    plus: tuple[FakePlus, str], session: HttpTransport
) -> None:
    """80/20 over two primaries and one canary is 2/2/1; rollback marks the canary down."""
    fake, api = plus
    router = build_router("edge", config(api), session)
    assert isinstance(router, NginxPlusRouter)

    await router.apply(route("route", 80, 20))
    assert fake.weights() == {
        "10.0.0.11:8080": (2, False),
        "10.0.0.12:8080": (2, False),
        "10.0.0.21:8080": (1, False),
    }

    await router.apply(route("rollback", 50, 50))
    assert fake.weights()["10.0.0.21:8080"] == (1, True)
    assert fake.weights()["10.0.0.11:8080"] == (1, False)


@pytest.mark.anyio
async def test_side_getting_traffic_is_set_before_the_other_goes_down(
    plus: tuple[FakePlus, str], session: HttpTransport
) -> None:
    """All to the canary: the canary is patched up first, so the upstream never is all down."""
    fake, api = plus

    await NginxPlusRouter(config(api), session).apply(route("route", 0, 100))

    assert [server_id for server_id, _ in fake.patches] == [2, 0, 1]
    assert fake.patches[1][1] == {"down": True}


@pytest.mark.anyio
async def test_refused_change_is_undone_and_quoted(
    plus: tuple[FakePlus, str], session: HttpTransport
) -> None:
    """A PATCH refused midway: the API's text and code in the error, earlier changes undone."""
    fake, api = plus
    router = NginxPlusRouter(config(api), session)
    await router.apply(route("route", 80, 20))
    before = fake.weights()
    fake.refuse_patch = 2  # the second PATCH from now on

    with pytest.raises(RouterError) as info:
        await router.apply(route("route", 50, 50))

    assert str(info.value) == (
        "nginx plus web: PATCH server 0: HTTP 405: method disabled (MethodDisabled)"
    )
    assert fake.weights() == before


@pytest.mark.anyio
async def test_unknown_upstream_quotes_the_api(
    plus: tuple[FakePlus, str], session: HttpTransport
) -> None:
    """An upstream the API does not know: its documented answer names it."""
    _, api = plus

    with pytest.raises(RouterError) as info:
        await NginxPlusRouter(config(api, upstream="nope"), session).apply(route())

    assert str(info.value) == (
        "nginx plus nope: GET servers: HTTP 404: upstream not found (UpstreamNotFound)"
    )


@pytest.mark.anyio
async def test_missing_server_is_named(plus: tuple[FakePlus, str], session: HttpTransport) -> None:
    """A configured address that is not in the upstream is an error before any change."""
    fake, api = plus

    with pytest.raises(RouterError, match=r"^nginx plus web: no server 10\.0\.0\.99:8080 in"):
        await NginxPlusRouter(config(api, canary="10.0.0.99:8080"), session).apply(route())

    assert fake.patches == []


@pytest.mark.anyio
async def test_transient_5xx_is_retried(plus: tuple[FakePlus, str], session: HttpTransport) -> None:
    """A 502 on a PATCH is tried again (a PATCH to absolute values is safe to repeat)."""
    fake, api = plus
    fake.fail_next_patch = 1

    await NginxPlusRouter(config(api), session).apply(route("route", 50, 50))

    assert fake.weights()["10.0.0.21:8080"] == (2, False)


def test_file_or_api_exactly_one() -> None:
    """An nginx router sets either file (NGINX) or api (NGINX Plus), not both, not neither."""
    with pytest.raises(ValueError, match="set exactly one of file"):
        config("http://127.0.0.1:1/api/9", file="/etc/nginx/canaryd/web.conf")
