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
them; a redirect is reported as the status it is.
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

from canaryd.errors import CanarydError

IDLE_SECONDS = 15.0
"""A connection unused for longer is closed rather than reused (servers drop idle ones)."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


class TransportError(CanarydError):
    """A request failed below HTTP: no connection, connection lost, broken answer.

    Internal to the provider, which turns it into a :class:`ProviderError`.
    """


class TLSError(TransportError):
    """The TLS handshake failed (certificate not trusted, wrong host name, ...)."""


class PoolTimeoutError(TransportError):
    """No connection came free within the request's timeout."""


class OutOfResourcesError(TransportError):
    """This process could not open a connection: out of file descriptors or memory."""


OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
"""``errno`` values that say this process (or the machine) ran out, not the server failed."""


class AnswerTimeoutError(TransportError):
    """No complete answer within the request's timeout."""


class BusyLoopError(AnswerTimeoutError):
    """Time ran out because canaryd's event loop was too busy, not the server too slow.

    The answer sat unread on the socket, or the timer fired well after its time
    (:func:`late`): canaryd was not looking when it should have been.
    """


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


class _Connection(asyncio.Protocol):
    """One persistent connection; carries one request at a time."""

    __slots__ = (
        "_body",
        "_cap",
        "_delimited",
        "_headers_done",
        "_parser",
        "_size",
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
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.last_used = 0.0
        self.requests = 0

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport

    def data_received(self, data: bytes) -> None:
        if self._waiter is None:  # bytes nobody asked for (a server's 408 on an idle line, say):
            self.close()  # whatever follows would be misread as the next answer
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(TransportError(f"not an HTTP answer: {exc}"))

    def eof_received(self) -> bool | None:
        return False  # close the transport: one side done means the connection is done

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiter = self._waiter
        if waiter is None or waiter.done():
            return
        if self._headers_done and not self._delimited:  # an answer delimited by the close
            self._finish(complete=True)
            return
        reason = f": {exc}" if exc else ""
        self._fail(TransportError(f"connection closed before the answer was complete{reason}"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        if lowered == b"content-length" or (
            lowered == b"transfer-encoding" and b"chunked" in value.lower()
        ):
            self._delimited = True

    def on_headers_complete(self) -> None:
        self._headers_done = True

    def on_body(self, body: bytes) -> None:
        if self._waiter is None:  # cut at the cap already
            return
        self._size += len(body)
        self._body.append(body)
        if self._size > self._cap:  # no point reading further: this connection is done
            self._finish(complete=False)
            self.close()

    def on_message_complete(self) -> None:
        self._finish(complete=True)

    # requests
    def send(self, request: bytes) -> asyncio.Future[Response]:
        """Write a request; the future gets its answer."""
        assert self.transport is not None and self._waiter is None
        self.requests += 1
        self._body, self._size = [], 0
        self._headers_done = self._delimited = False
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
        waiter.set_result(Response(self._parser.get_status_code(), body, complete))
        if not self._parser.should_keep_alive():
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
        self, path: str, body: bytes, *, timeout: float, headers: bytes = b""
    ) -> Response:
        """POST a form ``body`` to ``path``; ``headers`` are extra header lines for this request.

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
        request = b"".join(
            (
                b"POST ",
                (self._prefix + path).encode("ascii"),
                b" HTTP/1.1\r\n",
                self._host_line,
                headers,
                b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ",
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
