"""Prometheus provider's HTTP/1.1 client: answers are read whole, cut short or capped."""

from __future__ import annotations

import asyncio
import time

import pytest
from aiohttp import web
from transport_servers import (
    OK_42,
    WAIT,
    RawServer,
    WebHandler,
    pool_for,
    raw_server,
    raw_url,
    replying,
    web_server,
)

from canaryd.providers.transport import Response, TransportError

pytestmark = pytest.mark.anyio


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
