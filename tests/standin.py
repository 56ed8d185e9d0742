"""A scripted HTTP server for provider tests: answers from a script, records requests.

Used where the real server cannot produce an answer on demand (a 503, a rate
limit, a proxy's error page) and, for InfluxDB's Flux API, as the documented-
answer fake. Binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from aiohttp import web

Reply = tuple[int, bytes, float]
"""What the stand-in answers to one request: status, body, seconds to wait first."""


@dataclass(frozen=True)
class Seen:
    """One request the stand-in received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes


@dataclass
class StandIn:
    """The server's script and what it received.

    Attributes:
        url: ``http://127.0.0.1:PORT``.
        script: replies in order; the last one repeats.
        requests: every request received.
        content_type: of every reply.
        headers: extra headers of every reply (a ``Location``, say).
    """

    url: str = ""
    script: list[Reply] = field(default_factory=list)
    requests: list[Seen] = field(default_factory=list)
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer with the next scripted reply."""
        body = await request.read()
        self.requests.append(
            Seen(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        status, reply, delay = self.script[min(len(self.requests), len(self.script)) - 1]
        if delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), delay)
        return web.Response(
            status=status, body=reply, content_type=self.content_type, headers=self.headers
        )


@asynccontextmanager
async def stand_in(
    *script: Reply, content_type: str = "application/json"
) -> AsyncIterator[StandIn]:
    """A stand-in answering every path and method from ``script``."""
    fake = StandIn(script=list(script), content_type=content_type)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.handle)
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
