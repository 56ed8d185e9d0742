"""Prometheus provider's HTTP/1.1 client: kept-alive connections, retirement, the one retry."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from transport_servers import (
    WAIT,
    RawServer,
    answer,
    keep_answering,
    pool_for,
    raw_server,
    raw_url,
    replying,
    web_server,
)

from canaryd.providers import transport
from canaryd.providers.transport import Response, TransportError

pytestmark = pytest.mark.anyio


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
