"""JSON nested too deeply for the decoder is bad input wherever it comes from, never a crash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from aiohttp import web

from canaryd.client import Client
from canaryd.config import PrometheusProvider
from canaryd.errors import ClientError, ProviderError
from canaryd.providers.prometheus import Prometheus

pytestmark = pytest.mark.anyio

DEEP = b"[" * 30_000
"""Well under every body cap, far beyond the decoder's recursion limit."""


@asynccontextmanager
async def answering(body: bytes, status: int = 200) -> AsyncIterator[str]:
    """A server answering ``body`` as JSON to every request; yields its URL."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def test_deep_prometheus_answer_is_a_provider_error() -> None:
    """A Prometheus answer nested 30,000 deep fails the query as "not Prometheus JSON"."""
    async with (
        answering(DEEP) as url,
        Prometheus(PrometheusProvider(type="prometheus", address=url)) as prom,
    ):
        with pytest.raises(ProviderError, match="not Prometheus JSON"):
            await prom.query("up", budget=2.0)


async def test_deep_api_answer_is_a_client_error() -> None:
    """An API answer nested 30,000 deep is a ClientError for the CLI, not a traceback."""
    async with answering(DEEP, status=500) as url, Client(url, None) as client:
        with pytest.raises(ClientError, match=r"HTTP 500"):
            await client.get("prod/web")
