"""A scripted Prometheus stand-in on 127.0.0.1 for the Prometheus provider's tests."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from canaryd.config import PrometheusProvider

# --------------------------------------------------------------------------- scripted stand-in

Reply = tuple[int, bytes, float]
"""What the stand-in answers to one request: status, body, seconds to wait first."""

OK_42 = b'{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}'


@dataclass
class StandIn:
    """A local aiohttp server playing Prometheus: answers from a script, records requests."""

    url: str = ""
    script: list[Reply] = field(default_factory=list)
    requests: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer with the next scripted reply (the last one repeats)."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((dict(request.headers), form))
        status, body, delay = self.script[min(len(self.requests), len(self.script)) - 1]
        if delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), delay)
        return web.Response(status=status, body=body, content_type="application/json")

    def config(self, **overrides: object) -> PrometheusProvider:
        """A provider config for this stand-in (short timeout unless overridden)."""
        return PrometheusProvider.model_validate(
            {"type": "prometheus", "address": self.url, "timeout": 1.0, **overrides}
        )


@pytest.fixture
async def stand_in(anyio_backend: str) -> AsyncIterator[StandIn]:
    """A scripted Prometheus stand-in on 127.0.0.1 (free port)."""
    fake = StandIn()
    app = web.Application()
    app.router.add_post("/api/v1/query", fake.handle)
    app.router.add_post("/api/v1/query_range", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        fake.release.set()
        await runner.cleanup()
