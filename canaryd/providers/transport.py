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

Hostile or broken answers are refused in :mod:`canaryd.providers.connection`
(docs/reliability.md, "The query transport").
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time

from yarl import URL

from canaryd.errors import AnswerTimeoutError as AnswerTimeoutError
from canaryd.errors import BusyLoopError as BusyLoopError
from canaryd.errors import OutOfResourcesError as OutOfResourcesError
from canaryd.errors import PoolTimeoutError as PoolTimeoutError
from canaryd.errors import TLSError as TLSError
from canaryd.errors import TransportError as TransportError
from canaryd.providers.connection import MAX_HEAD_BYTES as MAX_HEAD_BYTES
from canaryd.providers.connection import OUT_OF_RESOURCES as OUT_OF_RESOURCES
from canaryd.providers.connection import Connection, late
from canaryd.providers.connection import Response as Response

IDLE_SECONDS = 15.0
"""A connection unused for longer is closed rather than reused (servers drop idle ones)."""

_DEFAULT_PORTS = {"http": 80, "https": 443}


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
        self._idle: list[Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[Connection | None]] = collections.deque()
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
        request = self._request(method, path, headers, content_type, body)
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

    def _request(
        self, method: bytes, path: str, headers: bytes, content_type: bytes, body: bytes
    ) -> bytes:
        """The bytes of one request to ``path`` (under the address's prefix)."""
        target = self._prefix + path
        if not target.startswith("/"):  # "" or "?a=1" under an address without a path
            target = "/" + target
        return b"".join(
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

    async def _exchange(self, conn: Connection, request: bytes, timeout: float) -> Response:
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

    async def _acquire(self, timeout: float) -> Connection | None:
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
        waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
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

    async def _connect(self, timeout: float) -> Connection:
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
                    lambda: Connection(self._cap),
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

    def _release(self, conn: Connection | None) -> None:
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

    def _hand_over(self, conn: Connection | None) -> bool:
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
