"""The keep-alive HTTP/1.1 client of the Prometheus provider, against real local servers.

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
import base64
import re
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from pydantic import ValidationError
from support import refused_port

from canaryd.config import PrometheusProvider
from canaryd.errors import ProviderError
from canaryd.providers import transport
from canaryd.providers.prometheus import Prometheus
from canaryd.providers.transport import (
    AnswerTimeoutError,
    Pool,
    PoolTimeoutError,
    Response,
    TransportError,
)

pytestmark = pytest.mark.anyio

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


def answer_on(release: asyncio.Event) -> RawHandler:
    """A handler that answers each request with ``ok`` once ``release`` is set."""

    async def on_release(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await srv.read_request(reader) is not None:
            await release.wait()
            writer.write(answer())

    return on_release


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


async def chunked(request: web.Request) -> web.StreamResponse:
    """Answer ``aaaa...bbbb...cccc`` in three chunks, written a moment apart."""
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    for piece in (b"a" * 1000, b"b" * 1000, b"c" * 1000):
        await resp.write(piece)
        await asyncio.sleep(0.01)  # separate writes on the wire
    await resp.write_eof()
    return resp


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


# --------------------------------------------------------------------------- answer framings


async def test_content_length_answer_is_read_whole() -> None:
    """An answer with a Content-Length comes back whole, complete, with its status."""
    async with web_server(replying(OK_42)) as srv, pool_for(srv.url) as pool:
        resp = await pool.post("/api/v1/query", b"query=up", timeout=WAIT)
    assert resp == Response(200, OK_42, True)


async def test_chunked_answer_over_several_writes_is_read_whole() -> None:
    """A chunked answer written in three pieces comes back whole, and the connection is kept."""
    async with web_server(chunked) as srv, pool_for(srv.url) as pool:
        first = await pool.post("/q", b"", timeout=WAIT)
        second = await pool.post("/q", b"", timeout=WAIT)
        assert pool.connections == 1
    assert first == second == Response(200, b"a" * 1000 + b"b" * 1000 + b"c" * 1000, True)
    assert srv.peers[0] == srv.peers[1]


async def test_answer_delimited_by_close_is_read_whole() -> None:
    """An HTTP/1.0 answer without length ends at the close: whole body, complete, not kept."""

    async def close_delimited(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nfirst half, ")
        await writer.drain()
        await asyncio.sleep(0.01)
        writer.write(b"second half")
        await writer.drain()

    async with raw_server(close_delimited) as srv, pool_for(raw_url(srv)) as pool:
        resp = await pool.post("/q", b"", timeout=WAIT)
        assert pool.connections == 0
    assert resp == Response(200, b"first half, second half", True)


async def test_answer_cut_before_its_content_length_is_an_error() -> None:
    """A connection closed before Content-Length bytes came is an error, not a short body."""

    async def short(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")

    async with raw_server(short) as srv, pool_for(raw_url(srv)) as pool:
        with pytest.raises(
            TransportError, match="connection closed before the answer was complete"
        ):
            await pool.post("/q", b"", timeout=WAIT)
        assert pool.connections == 0
    assert srv.accepted == 1  # a first request on a new connection is not sent again


@pytest.mark.parametrize(
    ("status", "body", "headers"),
    [
        (503, b"overloaded", {}),
        (401, b"who are you?", {"WWW-Authenticate": "Basic"}),
        (301, b"moved", {"Location": "/elsewhere"}),
        (404, b"", {}),
    ],
    ids=["503", "401", "301-not-followed", "404-empty"],
)
async def test_status_is_passed_through(status: int, body: bytes, headers: dict[str, str]) -> None:
    """Any status comes back as it is, with its body; a redirect is not followed."""
    async with web_server(replying(body, status, **headers)) as srv, pool_for(srv.url) as pool:
        resp = await pool.post("/q", b"", timeout=WAIT)
    assert resp == Response(status, body, True, headers.get("Location", ""))
    assert srv.paths == ["/q"]


async def test_answer_without_body_keeps_the_connection() -> None:
    """A 204 (no body by definition) completes at once and its connection is reused."""
    async with web_server(replying(b"", 204)) as srv, pool_for(srv.url) as pool:
        for _ in range(3):
            assert await pool.post("/q", b"", timeout=WAIT) == Response(204, b"", True)
    assert len(set(srv.peers)) == 1


# --------------------------------------------------------------------------- keep-alive


async def test_sequential_posts_share_one_connection() -> None:
    """Five posts one after another go over one TCP connection."""
    async with web_server(replying(b"ok")) as srv, pool_for(srv.url) as pool:
        for _ in range(5):
            assert (await pool.post("/q", b"x=1", timeout=WAIT)).body == b"ok"
        assert pool.connections == 1
    assert len(srv.peers) == 5
    assert len(set(srv.peers)) == 1


async def test_connection_close_answer_is_not_reused() -> None:
    """An answer saying ``Connection: close`` closes its connection; the next post opens one."""

    async def closing(request: web.Request) -> web.StreamResponse:
        resp = web.Response(text="bye")
        resp.force_close()
        return resp

    async with web_server(closing) as srv, pool_for(srv.url) as pool:
        for _ in range(3):
            assert (await pool.post("/q", b"", timeout=WAIT)).body == b"bye"
            assert pool.connections == 0
    assert len(set(srv.peers)) == 3


async def test_http10_answer_is_not_reused() -> None:
    """An HTTP/1.0 answer (no keep-alive) is not reused even if the server keeps the socket."""

    async def http10(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await srv.read_request(reader) is not None:
            writer.write(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok")

    async with raw_server(http10) as srv, pool_for(raw_url(srv)) as pool:
        for _ in range(2):
            assert await pool.post("/q", b"", timeout=WAIT) == Response(200, b"ok", True)
            assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 2)  # the client closed both
    assert srv.accepted == 2


async def test_connection_idle_too_long_is_replaced(monkeypatch: pytest.MonkeyPatch) -> None:
    """A connection idle for longer than IDLE_SECONDS is closed and a new one opened."""
    monkeypatch.setattr(transport, "IDLE_SECONDS", 0.0)
    async with raw_server(keep_answering) as srv, pool_for(raw_url(srv)) as pool:
        await pool.post("/q", b"", timeout=WAIT)
        await pool.post("/q", b"", timeout=WAIT)
        assert pool.connections == 1
        await srv.wait_until(lambda: srv.eofs == 1)  # the first one was closed by the client
    assert srv.accepted == 2


# --------------------------------------------------------------------------- limit


async def test_limit_bounds_concurrent_connections() -> None:
    """With limit=2, five concurrent posts to a slow server use two connections at most."""

    async def slow(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await srv.read_request(reader) is not None:
            await asyncio.sleep(0.1)
            writer.write(answer(f"conn {index}".encode()))

    results: list[Response] = []
    most = 0

    async with raw_server(slow) as srv, pool_for(raw_url(srv), limit=2) as pool:

        async def one() -> None:
            nonlocal most
            most = max(most, pool.connections)
            results.append(await pool.post("/q", b"", timeout=WAIT))
            most = max(most, pool.connections)

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(one)
    assert len(results) == 5
    assert all(r.status == 200 and r.complete for r in results)
    assert srv.peak == 2  # both used, never more
    assert srv.accepted == 2  # the queued posts got the freed connections
    assert most == 2


async def test_no_free_connection_is_a_pool_timeout() -> None:
    """With limit=1 and a server that never answers, a second post fails after its timeout."""
    async with raw_server(never_answer) as srv, pool_for(raw_url(srv), limit=1) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(pool.post, "/q", b"", timeout=WAIT))  # holds the only connection
            await srv.wait_until(lambda: len(srv.requests) == 1)
            started = time.monotonic()
            with pytest.raises(PoolTimeoutError):
                await pool.post("/q", b"", timeout=0.2)
            elapsed = time.monotonic() - started
            tg.cancel_scope.cancel()
        assert pool.connections == 0  # the cancelled one gave its slot back
    assert 0.2 <= elapsed < 1.0
    assert srv.accepted == 1


async def test_queue_wait_does_not_eat_the_request_time() -> None:
    """A post that waited in the queue still gets its whole timeout for the answer."""

    async def slow(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await srv.read_request(reader) is not None:
            await asyncio.sleep(0.3)
            writer.write(answer())

    results: list[Response] = []
    async with raw_server(slow) as srv, pool_for(raw_url(srv), limit=1) as pool:

        async def one() -> None:
            results.append(await pool.post("/q", b"", timeout=0.5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)  # waits ~0.3 s, then needs ~0.3 s more: over 0.5 in all
    assert [r.status for r in results] == [200, 200]
    assert srv.accepted == 1


async def test_retry_after_queue_wait_gets_the_request_time() -> None:
    """The one retry of a post that waited in the queue is not cut short by that wait."""

    async def drops_second(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        # connection 0: answers its first request slowly, then drops the next unanswered;
        # connection 1: answers slowly
        while await srv.read_request(reader) is not None:
            if index == 0 and len(srv.requests) == 2:
                return
            await asyncio.sleep(0.3)
            writer.write(answer())

    results: list[Response] = []
    async with raw_server(drops_second) as srv, pool_for(raw_url(srv), limit=1) as pool:

        async def one() -> None:
            results.append(await pool.post("/q", b"", timeout=0.5))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
    assert [r.status for r in results] == [200, 200]
    assert (srv.accepted, len(srv.requests)) == (2, 3)


# --------------------------------------------------------------------------- timeouts


async def test_no_answer_is_an_answer_timeout_and_the_connection_is_dropped() -> None:
    """A server that never answers: AnswerTimeoutError after the timeout, connection closed."""

    async def first_never(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await (never_answer if index == 0 else keep_answering)(srv, reader, writer, index)

    async with raw_server(first_never) as srv, pool_for(raw_url(srv)) as pool:
        started = time.monotonic()
        with pytest.raises(AnswerTimeoutError):
            await pool.post("/q", b"", timeout=0.3)
        elapsed = time.monotonic() - started
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 1)  # the client closed it
        assert await pool.post("/q", b"", timeout=WAIT) == Response(200, b"ok", True)
    assert 0.3 <= elapsed < 1.0
    assert srv.accepted == 2


async def test_slow_headers_then_silence_is_an_answer_timeout() -> None:
    """Headers without the promised body do not stop the timer: AnswerTimeoutError."""

    async def half(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        await srv.read_request(reader)

    async with raw_server(half) as srv, pool_for(raw_url(srv)) as pool:
        with pytest.raises(AnswerTimeoutError):
            await pool.post("/q", b"", timeout=0.2)
        assert pool.connections == 0


# --------------------------------------------------------------------------- body cap

CAP = 2500


async def test_answer_of_exactly_the_cap_is_complete() -> None:
    """An answer of exactly ``max_body`` bytes is complete and its connection kept."""
    async with web_server(replying(b"x" * CAP)) as srv, pool_for(srv.url, max_body=CAP) as pool:
        assert await pool.post("/q", b"", timeout=WAIT) == Response(200, b"x" * CAP, True)
        assert pool.connections == 1


@pytest.mark.parametrize(
    "handler",
    [replying(b"a" * 1000 + b"b" * 1000 + b"c" * 1000), chunked],
    ids=["content-length", "chunked"],
)
async def test_answer_over_the_cap_is_cut(handler: WebHandler) -> None:
    """An answer longer than ``max_body``: incomplete, exactly ``max_body`` bytes, not reused."""
    async with web_server(handler) as srv, pool_for(srv.url, max_body=CAP) as pool:
        resp = await pool.post("/q", b"", timeout=WAIT)
        assert pool.connections == 0
        assert (await pool.post("/q", b"", timeout=WAIT)).complete is False
    assert resp == Response(200, b"a" * 1000 + b"b" * 1000 + b"c" * 500, False)
    assert len(set(srv.peers)) == 2


async def test_close_delimited_answer_over_the_cap_is_cut() -> None:
    """An answer delimited by the close is cut at ``max_body`` too."""

    async def big(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await srv.read_request(reader)
        writer.write(b"HTTP/1.0 200 OK\r\n\r\n" + b"z" * (CAP * 4))
        await writer.drain()

    async with raw_server(big) as srv, pool_for(raw_url(srv), max_body=CAP) as pool:
        assert await pool.post("/q", b"", timeout=WAIT) == Response(200, b"z" * CAP, False)


async def test_endless_chunked_answer_returns_promptly() -> None:
    """A chunked answer that never ends is cut at the cap at once, not read forever."""
    sent = 0

    async def endless(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        nonlocal sent
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b"%x\r\n%s\r\n" % (4096, b"e" * 4096)
        while True:
            writer.write(chunk)
            sent += 4096
            await writer.drain()

    async with raw_server(endless) as srv, pool_for(raw_url(srv), max_body=100_000) as pool:
        started = time.monotonic()
        resp = await pool.post("/q", b"", timeout=5.0)
        elapsed = time.monotonic() - started
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.open == 0)  # the server's writes fail: client is gone
    assert resp == Response(200, b"e" * 100_000, False)
    assert elapsed < 1.5
    assert sent < 50_000_000  # stopped writing soon after the cut


# --------------------------------------------------------------------------- stale keep-alive


async def test_server_closing_an_idle_connection_is_survived() -> None:
    """The server closes a kept-alive connection after an answer: the next post still succeeds."""

    async def one_then_close(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await srv.read_request(reader)
        writer.write(answer(f"conn {index}".encode()))
        await writer.drain()
        await asyncio.sleep(0.05)

    async with raw_server(one_then_close) as srv, pool_for(raw_url(srv)) as pool:
        assert (await pool.post("/q", b"", timeout=WAIT)).body == b"conn 0"
        await srv.wait_until(lambda: srv.open == 0)
        assert (await pool.post("/q", b"", timeout=WAIT)).body == b"conn 1"
        assert pool.connections == 1
    assert srv.accepted == 2


async def test_bytes_on_an_idle_connection_retire_it() -> None:
    """A server talking on an idle kept-alive connection (a 408, half an answer): not reused."""

    async def answer_then_babble(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await srv.read_request(reader)
        writer.write(answer(f"conn {index}".encode()))
        await writer.drain()
        await asyncio.sleep(0.02)
        writer.write(b"HTTP/1.1 408 Request Timeout\r\nContent-Le")  # cut: would poison a parse
        await writer.drain()
        while await srv.read_request(reader) is not None:
            writer.write(answer(b"misread"))

    async with raw_server(answer_then_babble) as srv, pool_for(raw_url(srv)) as pool:
        assert (await pool.post("/q", b"", timeout=WAIT)).body == b"conn 0"
        await srv.wait_until(lambda: srv.eofs == 1)  # the client dropped it on the stray bytes
        assert (await pool.post("/q", b"", timeout=WAIT)).body == b"conn 1"
    assert srv.accepted == 2


async def test_reused_connection_dropped_without_answer_is_retried_once() -> None:
    """A reused connection closed after reading the request: sent again on a new one, answered."""

    async def drops_second(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await srv.read_request(reader) is not None:
            if index == 0 and len(srv.requests) == 2:
                return  # read, not answered, closed
            writer.write(answer(f"conn {index}".encode()))

    async with raw_server(drops_second) as srv, pool_for(raw_url(srv)) as pool:
        assert (await pool.post("/q", b"n=1", timeout=WAIT)).body == b"conn 0"
        assert (await pool.post("/q", b"n=2", timeout=WAIT)).body == b"conn 1"
        assert pool.connections == 1
    assert srv.accepted == 2
    assert srv.requests[1] == srv.requests[2]  # the same request, sent again
    assert srv.requests[2].endswith(b"n=2")


async def test_retry_is_made_once_only() -> None:
    """When the retry's new connection is dropped too, the post fails; no third attempt."""

    async def drops_after_first(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        if await srv.read_request(reader) is not None and len(srv.requests) == 1:
            writer.write(answer())
            await srv.read_request(reader)

    async with raw_server(drops_after_first) as srv, pool_for(raw_url(srv)) as pool:
        await pool.post("/q", b"", timeout=WAIT)
        with pytest.raises(TransportError, match="connection closed before"):
            await pool.post("/q", b"", timeout=WAIT)
        assert pool.connections == 0
    assert (srv.accepted, len(srv.requests)) == (2, 3)


async def test_retry_refused_gives_the_slot_back() -> None:
    """A retry whose new connection is refused fails the post and frees its slot."""

    async def stop_on_second(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await srv.read_request(reader) is not None:
            if len(srv.requests) == 2:
                assert srv.listener is not None
                srv.listener.close()  # stop listening, then drop this connection unanswered
                return
            writer.write(answer())

    async with raw_server(stop_on_second) as srv, pool_for(raw_url(srv), limit=1) as pool:
        await pool.post("/q", b"", timeout=WAIT)
        for _ in range(2):  # with limit=1, a slot kept would make the second a pool timeout
            with pytest.raises(TransportError, match=r"^ConnectionRefusedError: "):
                await pool.post("/q", b"", timeout=0.5)
            assert pool.connections == 0
    assert (srv.accepted, len(srv.requests)) == (1, 2)


async def test_first_request_on_a_new_connection_is_not_retried() -> None:
    """A new connection dropped without an answer fails the post at once (not sent twice)."""

    async def drop(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await srv.read_request(reader)

    async with raw_server(drop) as srv, pool_for(raw_url(srv)) as pool:
        with pytest.raises(TransportError, match="connection closed before"):
            await pool.post("/q", b"", timeout=WAIT)
        assert pool.connections == 0
    assert (srv.accepted, len(srv.requests)) == (1, 1)


# --------------------------------------------------------------------------- broken answers


async def test_garbage_answer_is_a_transport_error() -> None:
    """Bytes that are not HTTP fail the post with TransportError and drop the connection."""

    async def garbage(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await srv.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6 not HTTP at all\r\n\r\n")
        await srv.read_request(reader)

    async with raw_server(garbage) as srv, pool_for(raw_url(srv)) as pool:
        with pytest.raises(TransportError, match="not an HTTP answer") as err:
            await pool.post("/q", b"", timeout=WAIT)
        assert type(err.value) is TransportError
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 1)


async def test_connection_refused_names_the_error_and_gives_the_slot_back() -> None:
    """Nothing listening: TransportError naming ConnectionRefusedError; the slot is free again."""
    async with pool_for(f"http://127.0.0.1:{refused_port()}", limit=1) as pool:
        for _ in range(3):  # with limit=1, a slot kept would make the next a pool timeout
            with pytest.raises(TransportError, match=r"^ConnectionRefusedError: ") as err:
                await pool.post("/q", b"", timeout=0.5)
            assert type(err.value) is TransportError
            assert pool.connections == 0


# --------------------------------------------------------------------------- cancellation


async def test_cancelled_post_drops_its_connection() -> None:
    """A post cancelled mid-request closes its connection; a later post works on a new one."""

    async def first_never(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await (never_answer if index == 0 else keep_answering)(srv, reader, writer, index)

    async with raw_server(first_never) as srv, pool_for(raw_url(srv), limit=1) as pool:
        with anyio.move_on_after(0.1) as scope:
            await pool.post("/q", b"", timeout=WAIT)
        assert scope.cancelled_caught
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 1)
        assert await pool.post("/q", b"", timeout=WAIT) == Response(200, b"ok", True)
        assert pool.connections == 1
    assert srv.accepted == 2


async def test_cancelled_wait_for_a_connection_leaves_the_pool_intact() -> None:
    """A post cancelled while queued takes nothing: the busy connection is then reused."""
    release = asyncio.Event()

    async with raw_server(answer_on(release)) as srv, pool_for(raw_url(srv), limit=1) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(partial(pool.post, "/q", b"", timeout=WAIT))
            await srv.wait_until(lambda: len(srv.requests) == 1)
            with anyio.move_on_after(0.05) as scope:
                await pool.post("/q", b"", timeout=WAIT)
            assert scope.cancelled_caught
            release.set()
        assert pool.connections == 1
        assert await pool.post("/q", b"", timeout=WAIT) == Response(200, b"ok", True)
    assert srv.accepted == 1
    assert len(srv.requests) == 2


async def test_post_cancelled_as_a_connection_is_handed_to_it_gives_it_back() -> None:
    """A queued post cancelled after a connection was handed to it, before it ran, returns it."""
    release = asyncio.Event()
    outcome: list[str] = []
    queued: list[asyncio.Task[object]] = []

    async with raw_server(answer_on(release)) as srv, pool_for(raw_url(srv), limit=1) as pool:

        async def wait_in_queue() -> None:
            task = asyncio.current_task()
            assert task is not None
            queued.append(task)
            await srv.wait_until(lambda: len(srv.requests) == 1)  # the test's post has the slot
            try:
                await pool.post("/q", b"", timeout=WAIT)
                outcome.append("answered")
            except asyncio.CancelledError:  # the test cancels this task itself, not a scope
                task.uncancel()
                outcome.append("cancelled")

        async def answer_once_queued() -> None:
            await srv.wait_until(lambda: len(srv.requests) == 1)
            await anyio.wait_all_tasks_blocked()
            release.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(wait_in_queue)
            tg.start_soon(answer_once_queued)
            await pool.post("/q", b"", timeout=WAIT)
            # the connection was just handed to the queued post, which has not run yet
            queued[0].cancel()
        assert outcome == ["cancelled"]
        assert pool.connections == 1
        assert await pool.post("/q", b"", timeout=0.5) == Response(200, b"ok", True)
    assert (srv.accepted, len(srv.requests)) == (1, 2)


# --------------------------------------------------------------------------- request bytes


async def test_request_bytes_are_exact() -> None:
    """The request is the prefixed path, Host with port, pool and post headers, length, body."""
    async with (
        raw_server(keep_answering) as srv,
        pool_for(f"http://127.0.0.1:{srv.port}/prom/", head=b"User-Agent: t/1\r\n") as pool,
    ):
        await pool.post("/api/v1/query", b"query=up%7B%7D", timeout=WAIT, headers=b"X-A: 1\r\n")
        await pool.post("/api/v1/query_range", b"", timeout=WAIT)
    assert srv.requests == [
        b"POST /prom/api/v1/query HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{srv.port}\r\n".encode()
        + b"User-Agent: t/1\r\nX-A: 1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\n\r\n"
        b"query=up%7B%7D",
        b"POST /prom/api/v1/query_range HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{srv.port}\r\n".encode()
        + b"User-Agent: t/1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n",
    ]


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("http://prom.example", b"prom.example"),
        ("http://prom.example:80", b"prom.example"),
        ("https://prom.example:443/x", b"prom.example"),
        ("http://prom.example:443", b"prom.example:443"),
        ("https://prom.example:9090", b"prom.example:9090"),
        ("http://[::1]", b"[::1]"),
        ("http://user:pw@prom.example:8080", b"prom.example:8080"),
    ],
    ids=["no-port", "http-80", "https-443", "http-443", "https-9090", "ipv6", "userinfo"],
)
def test_host_line_has_the_port_unless_default(address: str, host: bytes) -> None:
    """The Host header carries the port only when it is not the scheme's default."""
    pool = Pool(address, limit=1, verify_tls=True, max_body=1)
    assert pool._host_line == b"Host: " + host + b"\r\n"


@pytest.mark.parametrize(
    "address",
    ["ftp://prom.example", "http://", "unix:///run/prom.sock"],
    ids=["ftp", "no-host", "unix"],
)
def test_address_must_be_http_with_a_host(address: str) -> None:
    """An address that is not http(s) with a host is refused when the pool is made."""
    with pytest.raises(ValueError, match="not an http"):
        Pool(address, limit=1, verify_tls=True, max_body=1)


def ipv6_loopback() -> bool:
    """``::1`` can be bound here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_ipv6_address_gets_a_bracketed_host() -> None:
    """``http://[::1]:port`` connects over IPv6 and sends ``Host: [::1]:port``."""
    if not ipv6_loopback():
        pytest.skip("IPv6 loopback (::1) is not available here")
    async with (
        raw_server(keep_answering, host="::1") as srv,
        pool_for(f"http://[::1]:{srv.port}") as pool,
    ):
        assert (await pool.post("/q", b"", timeout=WAIT)).body == b"ok"
    assert f"\r\nHost: [::1]:{srv.port}\r\n".encode() in srv.requests[0]


# --------------------------------------------------------------------------- aclose


async def test_aclose_closes_idle_connections_and_refuses_posts() -> None:
    """aclose closes idle connections (the server sees EOF) and later posts fail."""
    async with raw_server(keep_answering) as srv:
        pool = Pool(raw_url(srv), limit=2, verify_tls=True, max_body=100)
        async with anyio.create_task_group() as tg:  # two connections, both left idle
            for _ in range(2):
                tg.start_soon(partial(pool.post, "/q", b"", timeout=WAIT))
        assert (srv.accepted, pool.connections) == (2, 2)
        await pool.aclose()
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 2)
        with pytest.raises(TransportError, match="the client is closed"):
            await pool.post("/q", b"", timeout=WAIT)
    assert len(srv.requests) == 2


async def test_aclose_fails_queued_posts_and_lets_the_one_in_flight_finish() -> None:
    """aclose fails queued posts at once; the post in flight gets its answer, then is closed."""
    release = asyncio.Event()

    results: list[Response] = []
    failures: list[BaseException] = []
    failed = anyio.Event()
    async with raw_server(answer_on(release)) as srv:
        pool = Pool(raw_url(srv), limit=1, verify_tls=True, max_body=100)

        async def in_flight() -> None:
            results.append(await pool.post("/q", b"", timeout=WAIT))

        async def queued() -> None:
            try:
                await pool.post("/q", b"", timeout=WAIT)
            except TransportError as exc:
                failures.append(exc)
                failed.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(in_flight)
            await srv.wait_until(lambda: len(srv.requests) == 1)
            tg.start_soon(queued)
            await anyio.wait_all_tasks_blocked()
            started = time.monotonic()
            await pool.aclose()
            with anyio.fail_after(0.5):
                await failed.wait()
            waited = time.monotonic() - started
            release.set()
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 1)  # in-flight connection closed, not kept
    assert results == [Response(200, b"ok", True)]
    assert [type(f) for f in failures] == [TransportError]
    assert "the client is closed" in str(failures[0])
    assert waited < 0.5
    assert len(srv.requests) == 1


# --------------------------------------------------------------------------- provider


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    """A secret file readable by its owner only, holding ``value`` as it is."""
    path = tmp_path / name
    path.write_text(value)
    path.chmod(0o600)
    return str(path)


def provider_config(url: str, **overrides: object) -> PrometheusProvider:
    """A provider config for a local server (short timeout)."""
    return PrometheusProvider.model_validate(
        {"type": "prometheus", "address": url, "timeout": 1.0, **overrides}
    )


async def test_token_with_a_line_break_is_refused_without_sending(tmp_path: Path) -> None:
    """A bearer token holding a line break fails naming the header, not the token; nothing sent."""
    token = secret_file(tmp_path, "token", "s3cr3t-token\r\nX-Injected: yes\n")
    async with (
        web_server(replying(OK_42)) as srv,
        Prometheus(provider_config(srv.url, bearer_token_file=token)) as prov,
    ):
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=2)
        assert prov.stats.attempts == 1
    assert str(err.value) == (
        "header 'Authorization': a name is one word without ':', a value one line; not sent"
    )
    assert "s3cr3t" not in str(err.value)
    assert srv.paths == []


async def test_url_userinfo_is_basic_auth_and_scrubbed_from_errors() -> None:
    """``user:pw@`` in the address is sent as basic auth and never appears in an error."""
    password = "s3cr3t@pw"
    encoded = base64.b64encode(f"canaryd:{password}".encode()).decode()

    async def echo(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        text = f"denied {auth} (that is canaryd:{password}, password {password})"
        return web.Response(status=401, text=text)

    async with web_server(echo) as srv:
        address = srv.url.replace("http://", "http://canaryd:s3cr3t%40pw@")
        async with Prometheus(provider_config(address)) as prov:
            with pytest.raises(ProviderError) as err:
                await prov.query("up", budget=2)
    assert srv.headers[0]["Authorization"] == f"Basic {encoded}"
    assert str(err.value) == (
        "prometheus answered HTTP 401, not Prometheus JSON: "
        "denied Basic *** (that is ***, password ***)"
    )


async def test_url_userinfo_stays_out_of_connection_errors() -> None:
    """A connection error names the host and port, never the address's user info."""
    port = refused_port()
    cfg = provider_config(f"http://canaryd:s3cr3t-pw@127.0.0.1:{port}", timeout=0.2)
    async with Prometheus(cfg) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=0.3)
    assert f"cannot reach prometheus at http://127.0.0.1:{port}/…: ConnectionRefusedError" in str(
        err.value
    )
    assert "s3cr3t" not in str(err.value)
    assert "canaryd" not in str(err.value)


def test_config_refuses_a_header_that_is_not_latin1() -> None:
    """A configured header value HTTP cannot carry is a config error naming the header."""
    with pytest.raises(ValidationError, match=r"header 'X-Team': only Latin-1 text can be sent"):
        PrometheusProvider.model_validate({"type": "prometheus", "headers": {"X-Team": "☃"}})


async def test_secret_that_is_not_latin1_is_refused_without_sending(tmp_path: Path) -> None:
    """A bearer token file HTTP cannot carry fails naming the header, not the token."""
    token = secret_file(tmp_path, "token", "s3cr3t-t☃ken")
    async with web_server(replying(OK_42)) as srv:
        cfg = provider_config(srv.url, bearer_token_file=token)
        with pytest.raises(
            ProviderError,
            match=r"^header 'Authorization': only Latin-1 text can be sent; not sent$",
        ) as e:
            async with Prometheus(cfg) as prov:
                await prov.query("up", budget=2)
    assert "s3cr3t" not in str(e.value)
    assert srv.paths == []


@pytest.mark.parametrize(
    "headers",
    [{"X-Scope-OrgID": "team-a\nX-Injected: yes"}, {"X-A": "a\rb"}, {"X-A: b": "c"}, {"": "c"}],
    ids=["lf-in-value", "cr-in-value", "colon-in-name", "empty-name"],
)
def test_config_refuses_headers_that_would_split_a_request(headers: dict[str, str]) -> None:
    """A configured header with a line break, or a name that is not one word, is a config error."""
    with pytest.raises(ValidationError, match="a name is one word without ':', a value one line"):
        PrometheusProvider.model_validate({"type": "prometheus", "headers": headers})


async def test_configured_headers_reach_the_server() -> None:
    """Headers from the config are sent with every query, beside User-Agent and Accept."""
    async with (
        web_server(replying(OK_42)) as srv,
        Prometheus(provider_config(srv.url, headers={"X-Scope-OrgID": "team-a"})) as prov,
    ):
        assert await prov.query("up", budget=2) == 42.0
        assert await prov.query("up", budget=2) == 42.0
    for headers in srv.headers:
        assert headers["X-Scope-OrgID"] == "team-a"
        assert headers["Accept"] == "application/json"
        assert headers["User-Agent"].startswith("canaryd")
    assert len(set(srv.peers)) == 1
