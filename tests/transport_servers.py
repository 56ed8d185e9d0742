"""Local servers for tests of the keep-alive HTTP/1.1 client of the Prometheus provider.

Two kinds of servers, both on 127.0.0.1 and a free port:

- aiohttp ``web`` servers for well-formed answers (Content-Length, chunked,
  status codes); each request's client address shows which connection it came on;
- a raw ``asyncio.start_server`` (:class:`RawServer`) that writes exact bytes, for
  answers aiohttp would not send: delimited by the close, cut short, endless,
  garbage, or no answer at all. It counts connections (accepted, open at once)
  and records every request's bytes.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field

import anyio
from aiohttp import web

from canaryd.providers.transport import Pool

OK_42 = b'{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}'


WAIT = 2.0
"""Seconds a test waits at most for something the server should see."""


def answer(body: bytes = b"ok") -> bytes:
    """A kept-alive HTTP/1.1 200 answer with a Content-Length."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)


# --------------------------------------------------------------------------- raw server


RawHandler = Callable[
    ["RawServer", asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]
]
"""Serves one connection: the server, the stream pair and the connection's index (from 0)."""


@dataclass
class RawServer:
    """A TCP server that writes exactly what its handler writes, and counts connections.

    Attributes:
        port: where it listens.
        accepted: connections accepted so far.
        open: connections open now (the handler is still running).
        peak: most connections open at once.
        requests: every request read, as raw bytes (head and body).
        eofs: connections the client closed while the server waited for a request.
        listener: the listening server (a handler may close it: new connections refused).
    """

    port: int = 0
    accepted: int = 0
    open: int = 0
    peak: int = 0
    requests: list[bytes] = field(default_factory=list)
    eofs: int = 0
    listener: asyncio.Server | None = None
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    async def _bump(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_until(self, predicate: Callable[[], bool], within: float = WAIT) -> None:
        """Return once ``predicate`` holds (checked at every change), at most ``within`` seconds."""
        with anyio.fail_after(within):
            async with self._changed:
                await self._changed.wait_for(predicate)

    async def read_request(self, reader: asyncio.StreamReader) -> bytes | None:
        """One request's bytes, recorded; ``None`` when the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            found = re.search(rb"\r\ncontent-length: *(\d+)", head, re.IGNORECASE)
            body = await reader.readexactly(int(found[1]) if found else 0)
        except (asyncio.IncompleteReadError, ConnectionError):
            self.eofs += 1
            await self._bump()
            return None
        self.requests.append(head + body)
        await self._bump()
        return head + body

    async def serve(
        self, handler: RawHandler, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Run ``handler`` for one connection, keeping the counts."""
        index = self.accepted
        self.accepted += 1
        self.open += 1
        self.peak = max(self.peak, self.open)
        await self._bump()
        try:
            with suppress(ConnectionError):
                await handler(self, reader, writer, index)
        finally:
            writer.close()
            self.open -= 1
            await self._bump()


@asynccontextmanager
async def raw_server(handler: RawHandler, host: str = "127.0.0.1") -> AsyncIterator[RawServer]:
    """Serve ``handler`` on ``host`` and a free port; stop every connection on exit."""
    srv = RawServer()
    tasks: set[asyncio.Task[None]] = set()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        # cancelled only by the exit below; ending normally keeps asyncio from logging it
        with suppress(asyncio.CancelledError):
            await srv.serve(handler, reader, writer)

    server = await asyncio.start_server(connected, host, 0)
    srv.port = server.sockets[0].getsockname()[1]
    srv.listener = server
    try:
        yield srv
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)
        await server.wait_closed()


async def keep_answering(
    srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
) -> None:
    """Answer every request on the connection with ``ok``, kept alive."""
    while await srv.read_request(reader) is not None:
        writer.write(answer())


async def never_answer(
    srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
) -> None:
    """Read requests and answer none of them (returns when the client closes)."""
    while await srv.read_request(reader) is not None:
        pass


# --------------------------------------------------------------------------- aiohttp server

WebHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class WebServer:
    """An aiohttp server; ``peers`` holds the client address of every request, in order."""

    url: str = ""
    peers: list[tuple[str, int]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


@asynccontextmanager
async def web_server(handler: WebHandler) -> AsyncIterator[WebServer]:
    """Serve ``handler`` for every path on 127.0.0.1 and a free port."""
    srv = WebServer()

    async def recorded(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        srv.peers.append(request.transport.get_extra_info("peername"))
        srv.paths.append(request.path)
        srv.headers.append(dict(request.headers))
        await request.read()
        return await handler(request)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", recorded)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    srv.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield srv
    finally:
        await runner.cleanup()


def replying(body: bytes, status: int = 200, **headers: str) -> WebHandler:
    """A handler answering ``body`` with ``status`` (and Content-Length) to every request."""

    async def handle(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, headers=headers)

    return handle


@asynccontextmanager
async def pool_for(
    address: str, *, limit: int = 4, max_body: int = 1024 * 1024, head: bytes = b""
) -> AsyncIterator[Pool]:
    """A pool to ``address``, closed on exit."""
    pool = Pool(address, limit=limit, verify_tls=True, max_body=max_body, head=head)
    try:
        yield pool
    finally:
        await pool.aclose()


def raw_url(srv: RawServer) -> str:
    """The raw server's address."""
    return f"http://127.0.0.1:{srv.port}"
