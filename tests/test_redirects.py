"""No outgoing call follows a redirect: a 3xx is a failure naming the status and target host.

Each server answers every POST with a redirect whose target (on the same
server) would answer a GET with 200, and a Prometheus-shaped success: a
client that followed it would count the call as done (docs/reliability.md,
"No redirects followed").
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web
from test_webhooks import SPEC, STATE, hook

from canaryd.config import Notifier, PrometheusProvider, WebhookRouter
from canaryd.errors import ProviderError, RouterError, WebhookError
from canaryd.http import HttpTransport
from canaryd.notifiers import deliver, render
from canaryd.providers.prometheus import Prometheus
from canaryd.routers import RouteRequest
from canaryd.routers.webhook import WebhookRouterClient
from canaryd.service.webhooks import call

pytestmark = pytest.mark.anyio

OK_JSON = {"status": "success", "data": {"resultType": "scalar", "result": [1, "1"]}}

STATUSES = [301, 302, 303, 307, 308]


@asynccontextmanager
async def redirecting(status: int, location: str) -> AsyncIterator[tuple[str, list[str]]]:
    """A server redirecting every POST to ``location``; GETs answer 200. Yields (url, GETs)."""
    gets: list[str] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        if request.method == "GET":
            gets.append(request.path)
            return web.json_response(OK_JSON)
        await request.read()
        return web.Response(status=status, headers={"Location": location})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", gets
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("status", STATUSES, ids=[str(s) for s in STATUSES])
async def test_router_redirect_is_not_applied(session: HttpTransport, status: int) -> None:
    """A router answering a redirect has not applied the route: RouterError naming the target."""
    async with redirecting(status, "/login?token=s3cr3t") as (url, gets):
        router = WebhookRouterClient(WebhookRouter(type="webhook", url=url + "/route"), session)
        request = RouteRequest("prod/web", "v2", "route", 80, 20, "key", [])
        with pytest.raises(RouterError) as caught:
            await router.apply(request)
    assert f"HTTP {status} redirect to {url}/…" in str(caught.value)
    assert "s3cr3t" not in str(caught.value)
    assert gets == []


async def test_webhook_redirect_is_a_failed_hook(session: HttpTransport) -> None:
    """A webhook answering 302 to another host failed; the reason names that host only."""
    async with redirecting(302, "https://sso.example.com/auth?next=/x") as (url, gets):
        result = await call(session, SPEC, STATE, hook(url + "/hook"), "k1")
    assert not result.ok
    assert (
        result.detail
        == "HTTP 302 redirect to https://sso.example.com/… (redirects are not followed)"
    )
    assert gets == []


async def test_notifier_redirect_is_not_sent(session: HttpTransport) -> None:
    """A notifier answering 307 (http to https, say) was not sent: WebhookError naming it."""
    from notifier_helpers import ROLLED_BACK

    payload, content_type = render("webhook", ROLLED_BACK, event_id="k", source="canaryd/test")
    async with redirecting(307, "https://127.0.0.1/hook") as (url, gets):
        notifier = Notifier(type="webhook", url=url + "/hook")
        with pytest.raises(WebhookError, match=r"HTTP 307 redirect to https://127\.0\.0\.1/…"):
            await deliver(
                session, notifier, payload, content_type, idempotency_key="k", secret=None
            )
    assert gets == []


async def test_prometheus_redirect_is_a_provider_error_naming_the_target() -> None:
    """A query answered by a redirect fails at once with the status and the target host."""
    async with redirecting(302, "http://login.example.net/q?t=1") as (url, gets):
        cfg = PrometheusProvider(type="prometheus", address=url)
        async with Prometheus(cfg) as prom:
            with pytest.raises(ProviderError) as caught:
                await prom.query("up", budget=2.0)
    assert str(caught.value) == (
        "prometheus answered HTTP 302 redirect to http://login.example.net/… "
        "(redirects are not followed)"
    )
    assert gets == []


async def test_cli_client_does_not_follow_a_redirect() -> None:
    """The CLI's API client reports a redirect (a proxy's sign-in page) instead of following it."""
    from canaryd.client import Client
    from canaryd.errors import ClientError

    async with (
        redirecting(302, "https://sso.example.com/login") as (url, gets),
        Client(url, "token") as client,
    ):
        with pytest.raises(ClientError, match=r"HTTP 302 redirect to https://sso\.example\.com/…"):
            await client.post("prod/web/abort", {})
    assert gets == []
