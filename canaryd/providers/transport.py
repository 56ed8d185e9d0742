"""A small keep-alive HTTP/1.1 client for metric queries: one origin, small answers.

A metrics provider sends thousands of tiny POSTs a second to one address and
reads answers of a few hundred bytes. aiohttp's general client spends about
three times the CPU of the request itself on building requests, responses,
cookies, traces and timers around it (benchmarks/README.md, round 3); this
client does only what a query needs: a pool of persistent connections to one
``http``/``https`` origin, the request's bytes written in one go, the answer
parsed by ``httptools`` (llhttp, the parser aiohttp and uvicorn use), one timer
per request.

What it does not do, on purpose: redirects, proxies, cookies, compression
(no ``Accept-Encoding`` is sent), HTTP/2. A metrics endpoint needs none of
them; a redirect is reported as the status it is, with its ``Location``.

Hostile or broken answers are refused the way aiohttp refuses them, or more
strictly (docs/reliability.md, "The query transport"; ``tests/test_transport_differential.py``
holds the two clients side by side):

- interim ``1xx`` answers are skipped, the final answer is the one returned;
  ``101 Switching Protocols`` (never asked for) is an error;
- what is not body (status lines, headers, interim answers, chunk framing,
  trailers) is capped at :data:`MAX_HEAD_BYTES` plus an eighth of the body;
  the body is cut at the cap;
- a ``Content-Encoding`` other than ``identity`` (never asked for) is an error;
- bytes after a complete answer would be read as the next query's answer: in
  the same read they fail the request, later they retire the connection.
"""

from __future__ import annotations

import asyncio
import collections
import errno
import select
import ssl
import time
from dataclasses import dataclass

import httptools
from yarl import URL

from canaryd.errors import AnswerTimeoutError as AnswerTimeoutError
from canaryd.errors import BusyLoopError as BusyLoopError
from canaryd.errors import OutOfResourcesError as OutOfResourcesError
from canaryd.errors import PoolTimeoutError as PoolTimeoutError
from canaryd.errors import TLSError as TLSError
from canaryd.errors import TransportError as TransportError

IDLE_SECONDS = 15.0
"""A connection unused for longer is closed rather than reused (servers drop idle ones)."""

MAX_HEAD_BYTES = 8 * 1024
"""Status lines and headers of one answer, interim ``1xx`` answers included, at most."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""``errno`` values that say this process (or the machine) ran out, not the server failed."""

LATE_SHARE = 0.25
"""A timer that fires this share of its timeout late (and at least ``LATE_MIN_SECONDS``)
was held up by an overloaded event loop: what it times cannot be judged."""

LATE_MIN_SECONDS = 0.1


def late(lateness: float, timeout: float) -> bool:
    """Whether a timer ``lateness`` seconds late, of a ``timeout``, was held up by a busy loop."""
    return lateness > max(LATE_MIN_SECONDS, LATE_SHARE * timeout)


@dataclass(frozen=True, slots=True)
class Response:
    """Status and body of an answer; ``complete`` is false when the body was cut at the cap."""

    status: int
    body: bytes
    complete: bool
    location: str = ""
    """The ``Location`` header (redirects), as sent."""
    retry_after: str = ""
    """The ``Retry-After`` header (rate limits), as sent."""
    ratelimit_reset: str = ""
    """The ``X-RateLimit-Reset`` header (vendors' rate limits: docs/providers.md), as sent."""


class _Connection(asyncio.Protocol):
    """One persistent connection; carries one request at a time."""

    __slots__ = (
        "_answered",
        "_body",
        "_cap",
        "_delimited",
        "_encoded",
        "_headers_done",
        "_keep_alive",
        "_location",
        "_parser",
        "_rate",
        "_seen",
        "_size",
        "_status",
        "_stray",
        "_waiter",
        "closed",
        "last_used",
        "requests",
        "transport",
    )

    def __init__(self, cap: int) -> None:
        self._cap = cap
        self._parser = httptools.HttpResponseParser(self)
        self._waiter: asyncio.Future[Response] | None = None
        self._body: list[bytes] = []
        self._size = 0
        self._headers_done = False
        self._delimited = False  # Content-Length or chunked: the end is known without EOF
        self._answered = False  # the final answer to the request in flight is complete
        self._stray = False  # bytes came after it
        self._status = 0
        self._keep_alive = False
        self._encoded = False  # a Content-Encoding other than identity
        self._location = b""
        self._rate: dict[bytes, bytes] = {}  # Retry-After, X-RateLimit-Reset
        self._seen = 0  # bytes received for the request in flight
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_used = 0.0
        self.requests = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        # Fed in pieces no larger than what the caps still allow: the parser buffers
        # a header until its end, so an endless one must be stopped before it is fed.
        while data:
            if self._waiter is None:  # bytes nobody asked for (a server's 408 on an idle
                self.close()  # line, say): whatever follows would be misread as an answer
                return
            room = self._room()
            if room <= 0:
                what = "head" if not self._headers_done else "answer"
                self._fail(TransportError(f"{what} larger than the client accepts"))
                return
            piece, data = data[:room], data[room:]
            self._seen += len(piece)
            self._feed(piece)
            if self._answered and self._waiter is not None:
                self._settle(stray=bool(data))
                return

    def _feed(self, piece: bytes) -> None:
        """Parse ``piece``; a parse error fails the request."""
        try:
            self._parser.feed_data(piece)
        except httptools.HttpParserUpgrade:
            self._fail(TransportError("answer switches protocols, which was not asked for"))
        except httptools.HttpParserError as exc:
            self._stray = self._stray or self._answered
            self._fail(TransportError(f"not an HTTP answer: {exc}"))

    def _settle(self, *, stray: bool) -> None:
        """The answer is complete: return it, unless bytes came after it in the same read.

        Such bytes would be parsed as the next query's answer; neither the answer
        they follow nor the connection is trusted (docs/reliability.md).
        """
        if stray or self._stray:
            self._fail(TransportError("bytes after the end of the answer"))
        else:
            self._finish(complete=True)

    def _room(self) -> int:
        """Bytes the request in flight may still receive before a cap is passed.

        Whatever is not body (status lines, headers, interim answers, chunk
        framing, trailers): :data:`MAX_HEAD_BYTES` plus an eighth of the body
        received so far; the body itself is cut at the cap by :meth:`on_body`.
        """
        return MAX_HEAD_BYTES + self._size // 8 - (self._seen - self._size)

    def eof_received(self) -> bool | None:
        return False  # close the transport: one side done means the connection is done

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._delimited:  # an answer delimited by the close
            self.on_message_complete()
            if self._answered:
                self._settle(stray=False)
            return
        reason = f": {exc}" if exc else ""
        self._fail(TransportError(f"connection closed before the answer was complete{reason}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self._answered:  # a second answer to one request
            self._stray = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._headers_done:
            return  # a trailer: framing and type come from the head only
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._delimited = True
        elif lowered == b"content-encoding" and value.strip().lower() not in (b"", b"identity"):
            self._encoded = True
        elif lowered == b"location":
            self._location = value
        elif lowered in (b"retry-after", b"x-ratelimit-reset"):
            self._rate[lowered] = value

    def on_headers_complete(self) -> None:
        if 100 <= self._parser.get_status_code() < 200:
            return  # an interim answer: the final one follows
        self._headers_done = True
        self._status = self._parser.get_status_code()

    def on_body(self, body: bytes) -> None:
        if self._waiter is None:  # cut at the cap already
            return
        self._size += len(body)
        self._body.append(body)
        if self._size > self._cap:  # no point reading further: this connection is done
            self._finish(complete=False)
            self.close()

    def on_message_complete(self) -> None:
        if not self._headers_done:  # the end of an interim answer (100 Continue, 103 ...)
            self._delimited = self._encoded = False
            self._location = b""
            self._rate = {}
            return
        if self._encoded:
            self._fail(TransportError("answer has a Content-Encoding that was not asked for"))
            return
        self._answered = True  # returned by data_received once the read is parsed
        self._keep_alive = self._parser.should_keep_alive()  # before the parser resets

    # requests
    def send(self, request: bytes) -> asyncio.Future[Response]:
        """Write a request; the future gets its answer."""
        assert self.transport is not None and self._waiter is None
        self.requests += 1
        self._body, self._size, self._seen = [], 0, 0
        self._headers_done = self._delimited = self._answered = self._encoded = False
        self._stray = False
        self._location = b""
        self._rate = {}
        waiter = self._waiter = asyncio.get_running_loop().create_future()
        self.transport.write(request)
        return waiter

    def _finish(self, *, complete: bool) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        body = b"".join(self._body)
        if not complete:
            body = body[: self._cap]
        location = self._location.decode("latin-1")
        rate = {k: v.decode("latin-1") for k, v in self._rate.items()}
        waiter.set_result(
            Response(
                self._status,
                body,
                complete,
                location,
                rate.get(b"retry-after", ""),
                rate.get(b"x-ratelimit-reset", ""),
            )
        )
        if not (complete and self._keep_alive):
            self.close()

    def _fail(self, exc: TransportError) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.close()

    def expire(self, when: float, timeout: float) -> None:
        """The request's time (``timeout``, up at loop time ``when``) is up: fail it, drop the
        connection (its state is unknown).

        If bytes of the answer wait unread on the socket, or this runs late
        (:func:`late`), canaryd was too busy to see the answer in time: that is its
        own trouble (:class:`BusyLoopError`), not a slow server.
        """
        lateness = asyncio.get_running_loop().time() - when
        if self._unread():
            self._fail(BusyLoopError("the answer arrived but canaryd was too busy to read it"))
        elif late(lateness, timeout):
            self._fail(
                BusyLoopError(f"canaryd was too busy to look in time ({lateness:.1f}s late)")
            )
        else:
            self._fail(AnswerTimeoutError("no complete answer in time"))

    def _unread(self) -> bool:
        """Whether bytes wait on the socket that the event loop has not read yet."""
        sock = None if self.transport is None else self.transport.get_extra_info("socket")
        if sock is None or sock.fileno() < 0:
            return False
        poller = select.poll()  # no descriptor of its own, unlike epoll or a dup()
        poller.register(sock.fileno(), select.POLLIN)
        return bool(poller.poll(0))

    @property
    def busy(self) -> bool:
        """A request is in flight."""
        return self._waiter is not None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Pool:
    """Persistent connections to one origin, at most ``limit`` at once.

    Args:
        address: ``http(s)://host[:port][/prefix]``; paths given to :meth:`post`
            are appended to the prefix. User info in the address is ignored
            (the caller turns it into an ``Authorization`` header).
        limit: connections open at most; further requests wait for one.
        verify_tls: check the server's certificate and host name.
        max_body: answers longer than this are cut (``Response.complete`` false).
        head: header lines sent with every request (``b"Name: value\\r\\n"`` each).
    """

    def __init__(
        self, address: str, *, limit: int, verify_tls: bool, max_body: int, head: bytes = b""
    ) -> None:
        url = URL(address)
        if url.scheme not in _DEFAULT_PORTS or not url.raw_host:
            raise ValueError(f"not an http(s) URL with a host: {url.scheme}://…")
        self._host = url.raw_host
        self._port = url.port or _DEFAULT_PORTS[url.scheme]
        self._ssl: ssl.SSLContext | None = None
        if url.scheme == "https":
            self._ssl = ssl.create_default_context()
            if not verify_tls:
                self._ssl.check_hostname = False
                self._ssl.verify_mode = ssl.CERT_NONE
        host = f"[{self._host}]" if ":" in self._host else self._host
        if url.explicit_port and url.port != _DEFAULT_PORTS[url.scheme]:
            host += f":{url.port}"
        self._prefix = url.raw_path.rstrip("/")
        self._host_line = f"Host: {host}\r\n".encode("ascii") + head
        self._limit = limit
        self._cap = max_body
        self._idle: list[_Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[_Connection | None]] = collections.deque()
        self._closed = False

    @property
    def connections(self) -> int:
        """Connections open now (idle and busy)."""
        return self._open

    async def post(
        self,
        path: str,
        body: bytes,
        *,
        timeout: float,
        headers: bytes = b"",
        method: bytes = b"POST",
        content_type: bytes = b"application/x-www-form-urlencoded",
    ) -> Response:
        """POST a form ``body`` to ``path``; ``headers`` are extra header lines for this request.

        ``method`` and ``content_type`` serve the providers that need another
        request (a ``GET`` with the query in ``path`` and an empty body, a JSON
        body): see docs/providers.md.

        ``timeout`` bounds the wait for a connection, and then, separately, the
        connection and the answer together: waiting in the queue does not eat
        the time the request itself gets.

        Raises:
            PoolTimeoutError: no connection came free within ``timeout``.
            AnswerTimeoutError: no complete answer within ``timeout`` once connected.
            OutOfResourcesError: no connection could be opened for want of file
                descriptors or memory.
            TLSError: the TLS handshake failed.
            TransportError: the connection failed or the answer is not HTTP.
        """
        target = self._prefix + path
        if not target.startswith("/"):  # "" or "?a=1" under an address without a path
            target = "/" + target
        request = b"".join(
            (
                method,
                b" ",
                target.encode("ascii"),
                b" HTTP/1.1\r\n",
                self._host_line,
                headers,
                b"Content-Type: ",
                content_type,
                b"\r\nContent-Length: ",
                str(len(body)).encode("ascii"),
                b"\r\n\r\n",
                body,
            )
        )
        conn = await self._acquire(timeout)  # None: a slot is ours, the connection is not open
        deadline = time.monotonic() + timeout  # from here: the queue's wait is not counted
        try:
            if conn is not None and conn.closed:  # closed by the server since it was handed over
                conn.close()  # its slot goes to the new one (or back, by _release, on failure)
                conn = None
            if conn is None:
                conn = await self._connect(timeout)
            try:
                return await self._exchange(conn, request, deadline - time.monotonic())
            except TransportError as exc:
                # A kept-alive connection the server has closed meanwhile fails at once:
                # a query is safe to send again, once, on a new connection.
                if type(exc) is not TransportError or conn.requests == 1:
                    raise
            conn.close()  # keeps its slot for the new one (given back by _release if that fails)
            left = deadline - time.monotonic()
            if left <= 0:
                raise AnswerTimeoutError("no complete answer in time")
            conn = await self._connect(left)
            return await self._exchange(conn, request, deadline - time.monotonic())
        finally:
            self._release(conn)

    async def _exchange(self, conn: _Connection, request: bytes, timeout: float) -> Response:
        """Send one request on ``conn`` and wait at most ``timeout`` for its answer."""
        waiter = conn.send(request)
        loop = asyncio.get_running_loop()
        when = loop.time() + timeout
        timer = loop.call_at(when, conn.expire, when, timeout)
        try:
            return await waiter
        except asyncio.CancelledError:
            conn.close()  # cancelled mid-request: the connection's state is unknown
            raise
        finally:
            timer.cancel()

    async def _acquire(self, timeout: float) -> _Connection | None:
        """An idle connection, or ``None`` with a slot reserved to open one.

        Raises:
            PoolTimeoutError: none within ``timeout``.
        """
        if self._closed:
            raise TransportError("the client is closed")
        now = time.monotonic()
        while self._idle:
            conn = self._idle.pop()
            if not conn.closed and now - conn.last_used < IDLE_SECONDS:
                return conn
            conn.close()
            self._open -= 1
        if self._open < self._limit:
            self._open += 1
            return None
        waiter: asyncio.Future[_Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)  # given up ones stay queued: _hand_over skips them
        try:
            async with asyncio.timeout(timeout):
                return await waiter
        except BaseException as exc:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                self._release(waiter.result())  # handed over just as this one gave up
            if isinstance(exc, TimeoutError):
                raise PoolTimeoutError("no connection came free in time") from None
            raise

    async def _connect(self, timeout: float) -> _Connection:
        """Open a connection for a slot already counted.

        Raises:
            AnswerTimeoutError: not connected within ``timeout`` (:class:`BusyLoopError`
                if canaryd's event loop was too busy to see it in time).
            TLSError: the TLS handshake failed.
            TransportError: the connection failed.
        """
        loop = asyncio.get_running_loop()
        when = loop.time() + timeout
        try:
            async with asyncio.timeout_at(when):
                transport, conn = await loop.create_connection(
                    lambda: _Connection(self._cap),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl else None,
                )
        except TimeoutError:
            lateness = loop.time() - when
            if late(lateness, timeout):
                message = (
                    f"canaryd was too busy to see the connection in time ({lateness:.1f}s late)"
                )
                raise BusyLoopError(message) from None
            raise AnswerTimeoutError("could not connect in time") from None
        except (ssl.SSLError, ssl.CertificateError) as exc:
            raise TLSError(str(exc)) from exc
        except OSError as exc:
            kind = OutOfResourcesError if exc.errno in OUT_OF_RESOURCES else TransportError
            raise kind(f"{type(exc).__name__}: {exc.strerror or exc}") from exc
        except MemoryError as exc:
            raise OutOfResourcesError("out of memory") from exc
        conn.transport = transport  # uvloop may call connection_made after returning
        return conn

    def _release(self, conn: _Connection | None) -> None:
        """Give back a connection after a request, or with ``None`` a slot never opened."""
        if conn is not None and not (conn.closed or conn.busy or self._closed):
            conn.last_used = time.monotonic()
            if not self._hand_over(conn):
                self._idle.append(conn)
            return
        if conn is not None:
            conn.close()
        self._open -= 1
        self._hand_over(None)

    def _hand_over(self, conn: _Connection | None) -> bool:
        """Give ``conn`` (or, with ``None``, a free slot) to the longest waiting request."""
        if conn is None and self._open >= self._limit:
            return False
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self._open += 1
                waiter.set_result(conn)
                return True
        return False

    async def aclose(self) -> None:
        """Close idle connections and fail queued requests; later requests fail too.

        Requests in flight get their answer; their connections are closed then.
        """
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._open -= len(self._idle)
        self._idle.clear()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(TransportError("the client is closed"))
        self._waiters.clear()
        await asyncio.sleep(0)  # let the transports finish closing
