"""The query transport beside aiohttp: it never accepts an answer aiohttp refuses.

One corpus of malformed and unusual answers (framing, interim ``1xx``, trailers,
bare LF, compression nobody asked for, duplicate or conflicting lengths, early
close, stray bytes) is served by a raw-socket server on 127.0.0.1 to canaryd's
client (:class:`canaryd.providers.transport.Pool`) and to an aiohttp client
session. Each client makes two requests in a row: the first gets the case's
bytes, every later one a plain ``real`` answer. See docs/reliability.md, "The
query transport".
"""

from __future__ import annotations

import asyncio
import gzip
import resource
from dataclasses import dataclass

import aiohttp
import pytest
from transport_servers import RawHandler, RawServer, pool_for, raw_server, raw_url

from canaryd.providers.transport import Response, TransportError

pytestmark = pytest.mark.anyio

TIMEOUT = 2.0
"""Seconds each request may take (every case ends well before: it closes or completes)."""

REAL = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nreal"
"""The answer to every request after the first."""

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
GZIPPED = gzip.compress(b"ok")


@dataclass(frozen=True)
class Case:
    """Bytes written as the answer to the first request; ``close``: the server closes then."""

    name: str
    data: bytes
    close: bool = False


CORPUS = [
    # framing
    Case("content-length", OK),
    Case("chunked", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
    Case(
        "chunk-extension",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2;x=y\r\nok\r\n0\r\n\r\n",
    ),
    Case(
        "chunk-size-not-hex",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nok\r\n0\r\n\r\n",
        close=True,
    ),
    Case(
        "chunk-size-overflow",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"f" * 40 + b"\r\nok\r\n",
        close=True,
    ),
    Case(
        "chunk-without-crlf",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nokX0\r\n\r\n",
        close=True,
    ),
    Case("close-delimited", b"HTTP/1.1 200 OK\r\n\r\nok", close=True),
    Case("negative-length", b"HTTP/1.1 200 OK\r\nContent-Length: -2\r\n\r\nok", close=True),
    Case("length-not-a-number", b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok", close=True),
    Case("length-list", b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", close=True),
    Case(
        "length-and-chunked",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"2\r\nok\r\n0\r\n\r\n",
        close=True,
    ),
    Case(
        "chunked-not-last",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\nok",
        close=True,
    ),
    Case(
        "duplicate-equal-lengths",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
        close=True,
    ),
    Case(
        "conflicting-lengths",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
        close=True,
    ),
    Case("space-before-colon", b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", close=True),
    Case(
        "folded-header",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
        close=True,
    ),
    Case(
        "nul-in-header",
        b"HTTP/1.1 200 OK\r\nX-A: a\x00b\r\nContent-Length: 2\r\n\r\nok",
        close=True,
    ),
    Case("status-not-a-number", b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok", close=True),
    Case("status-999", b"HTTP/1.1 999 Odd\r\nContent-Length: 2\r\n\r\nok", close=True),
    Case("http-2.0-line", b"HTTP/2.0 200 OK\r\nContent-Length: 2\r\n\r\nok", close=True),
    Case("not-http", b"SSH-2.0-OpenSSH_9.6\r\n", close=True),
    Case(
        "long-header",
        b"HTTP/1.1 200 OK\r\nX-A: " + b"a" * 9000 + b"\r\nContent-Length: 2\r\n\r\nok",
        close=True,
    ),
    Case(
        "many-headers",
        b"HTTP/1.1 200 OK\r\n" + b"X-A: a\r\n" * 2000 + b"Content-Length: 2\r\n\r\nok",
        close=True,
    ),
    # interim answers
    Case("100-then-200", b"HTTP/1.1 100 Continue\r\n\r\n" + OK),
    Case("103-then-200", b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n" + OK),
    Case("two-interims", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n" + OK),
    Case("interim-then-close", b"HTTP/1.1 100 Continue\r\n\r\n", close=True),
    Case("endless-interims", b"HTTP/1.1 100 Continue\r\n\r\n" * 2000 + OK, close=True),
    Case(
        "101-upgrade",
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n" + OK,
        close=True,
    ),
    # trailers
    Case(
        "trailer",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: 1\r\n\r\n",
    ),
    Case(
        "long-trailer",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\nX-T: "
        + b"t" * 9000
        + b"\r\n\r\n",
        close=True,
    ),
    # bare LF / CR
    Case("bare-lf", b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", close=True),
    Case("bare-lf-in-headers", b"HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok", close=True),
    Case("bare-cr", b"HTTP/1.1 200 OK\rContent-Length: 2\r\r\nok", close=True),
    Case(
        "bare-lf-chunk",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\n0\n\n",
        close=True,
    ),
    # compression nobody asked for
    Case(
        "gzip-body",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
        % (len(GZIPPED), GZIPPED),
    ),
    Case(
        "gzip-label-plain-body",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 2\r\n\r\nok",
        close=True,
    ),
    Case(
        "deflate-label",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: deflate\r\nContent-Length: 2\r\n\r\nok",
        close=True,
    ),
    Case(
        "identity-encoding",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: identity\r\nContent-Length: 2\r\n\r\nok",
    ),
    # early close
    Case("close-before-anything", b"", close=True),
    Case("close-in-status-line", b"HTTP/1.1 20", close=True),
    Case("close-in-headers", b"HTTP/1.1 200 OK\r\nContent-Len", close=True),
    Case("close-in-body", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nok", close=True),
    Case(
        "close-in-chunk",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nok",
        close=True,
    ),
    Case(
        "close-before-last-chunk",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n",
        close=True,
    ),
    # stray bytes after a complete answer
    Case("forged-second-answer", OK + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"),
    Case(
        "body-longer-than-length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n",
    ),
    Case("garbage-after-answer", OK + b"\x00\x01garbage"),
    Case("crlf-after-answer", OK + b"\r\n"),
    Case("half-answer-after-answer", OK + b"HTTP/1.1 200 OK\r\nContent-Le"),
]

Outcome = tuple[int, bytes] | None
"""``(status, body)`` of an accepted answer; ``None``: the client refused it."""


def serve_case(case: Case) -> RawHandler:
    """A handler answering the first request with ``case.data`` and every later one ``real``."""

    async def handle(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        while await srv.read_request(reader) is not None:
            if len(srv.requests) > 1:
                writer.write(REAL)
                continue
            writer.write(case.data)
            await writer.drain()
            if case.close:
                return

    return handle


async def ours(url: str) -> list[Outcome]:
    """Two requests in a row through canaryd's query transport (one connection at most)."""
    outcomes: list[Outcome] = []
    async with pool_for(url, limit=1) as pool:
        for _ in range(2):
            try:
                resp: Response = await pool.post("/q", b"a=1", timeout=TIMEOUT)
            except TransportError:
                outcomes.append(None)
            else:
                outcomes.append((resp.status, resp.body) if resp.complete else None)
    return outcomes


async def theirs(url: str) -> list[Outcome]:
    """Two requests in a row through an aiohttp client session (one connection at most)."""
    outcomes: list[Outcome] = []
    connector = aiohttp.TCPConnector(limit=1)
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(2):
            try:
                async with session.post(url + "/q", data=b"a=1", allow_redirects=False) as resp:
                    outcomes.append((resp.status, await resp.read()))
            except (aiohttp.ClientError, TimeoutError):
                outcomes.append(None)
    return outcomes


async def run_both(case: Case) -> tuple[list[Outcome], list[Outcome]]:
    """The outcomes of canaryd's client and of aiohttp, each against a fresh server."""
    async with raw_server(serve_case(case)) as srv:
        mine = await ours(raw_url(srv))
    async with raw_server(serve_case(case)) as srv:
        aio = await theirs(raw_url(srv))
    return mine, aio


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
async def test_never_accepts_what_aiohttp_refuses(case: Case) -> None:
    """An answer aiohttp refuses is refused by canaryd's client; both accepting means equal."""
    (mine, _), (aio, _) = await run_both(case)
    if aio is None:
        assert mine is None, f"accepted {mine!r}, which aiohttp refuses"
    elif mine is not None:
        assert mine == aio


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
async def test_the_next_query_gets_its_own_answer(case: Case) -> None:
    """Whatever the first answer was, the second request gets the real answer or fails."""
    (_, second), _ = await run_both(case)
    assert second in (None, (200, b"real"))


async def test_interim_answers_are_skipped() -> None:
    """``100 Continue`` and ``103 Early Hints`` are not final: the 200 after them is returned."""
    case = Case("interims", b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n" + OK)
    (first, _), _ = await run_both(case)
    assert first == (200, b"ok")


async def test_forged_second_answer_is_not_the_next_querys() -> None:
    """An answer followed by a forged one is refused, and the next query is asked anew."""
    forged = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
    async with raw_server(serve_case(Case("forged", forged))) as srv:
        assert await ours(raw_url(srv)) == [None, (200, b"real")]
        assert srv.accepted == 2


async def test_endless_header_is_refused_within_the_cap() -> None:
    """An answer whose header never ends fails at once after 8 KiB, memory and time bounded."""
    sent = 0

    async def endless_header(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        nonlocal sent
        await srv.read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Endless: ")
        while sent < 64 * 1024 * 1024:
            writer.write(b"a" * 65536)
            sent += 65536
            await writer.drain()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with raw_server(endless_header) as srv, pool_for(raw_url(srv)) as pool:
        with pytest.raises(TransportError, match="head larger"):
            await pool.post("/q", b"", timeout=10.0)
    assert loop.time() - started < 2.0
    assert sent < 16 * 1024 * 1024  # the client stopped reading long before the server's end
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before
    assert grown_kib < 32 * 1024
