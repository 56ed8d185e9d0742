"""One persistent HTTP/1.1 connection of the query client, and the answer it parses.

:class:`Connection` is the ``asyncio.Protocol`` the pool in
:mod:`canaryd.providers.transport` opens, one request at a time; the answer is
parsed by ``httptools`` (llhttp). Hostile or broken answers are refused the way
aiohttp refuses them, or more strictly (docs/reliability.md, "The query
transport"; ``tests/test_transport_differential.py`` holds the two clients side
by side):

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
import errno
import select
from dataclasses import dataclass

import httptools

from canaryd.errors import AnswerTimeoutError, BusyLoopError, TransportError

MAX_HEAD_BYTES = 8 * 1024
"""Status lines and headers of one answer, interim ``1xx`` answers included, at most."""

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


class Connection(asyncio.Protocol):
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
