"""A real HTTP receiver on 127.0.0.1 that records every request, for adapter tests.

::

    async with Receiver(statuses=[503, 503, 200], body="busy") as r:
        await call_something(r.url + "/hooks/T000/B000")
        await r.wait_for(3)  # requests made by background tasks
        assert r.requests[-1].json == {...}
        assert r.requests[0].headers["Idempotency-Key"] == r.requests[2].headers["Idempotency-Key"]

Any method and any path are accepted. The n-th request gets ``statuses[n]``;
after the list runs out the last status repeats. ``delay`` holds each answer
back (to test client timeouts, or to keep a request in flight until the test
calls :meth:`Receiver.release`); leaving the ``async with`` block releases
held answers at once, so a test never waits for a delay it no longer needs.
With ``tls=`` (see :func:`support.tls.self_signed`, re-exported here) it serves
HTTPS and ``url`` starts with ``https://``.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
from aiohttp import web
from multidict import CIMultiDictProxy
from support.tls import self_signed as self_signed


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the receiver saw it.

    Attributes:
        method: ``POST``, ``GET``...
        path: the path, without the query string.
        query: the raw query string ("" when none).
        headers: the request headers (case-insensitive lookups).
        body: the raw body bytes, exactly as sent (what a signature covers).
    """

    method: str
    path: str
    query: str
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")

    @property
    def json(self) -> Any:
        """The body parsed as JSON, or ``None`` when it is not JSON.

        Raises:
            UnicodeDecodeError: the body is not UTF-8.
        """
        try:
            return json.loads(self.body)
        except ValueError:
            return None


class Receiver:
    """An aiohttp server on 127.0.0.1 (a free port) that records requests and answers as told.

    Args:
        statuses: the status of the 1st, 2nd, ... answer; the last one repeats.
        body: the body of every answer.
        content_type: the answer's ``Content-Type``.
        delay: seconds to hold each answer back (released early on exit).
        port: the port to listen on (0: a free one); a test that needs a receiver
            "down, then back" reserves a port and starts the receiver on it later.
        tls: serve HTTPS with this server context (e.g. :func:`self_signed`).
    """

    wait_limit: float = 5.0
    """Upper bound (seconds) of :meth:`wait_for`."""

    def __init__(
        self,
        statuses: Sequence[int] = (200,),
        *,
        body: str | bytes = "ok",
        content_type: str = "text/plain",
        delay: float = 0.0,
        port: int = 0,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        if not statuses:
            raise ValueError("statuses must not be empty")
        self.statuses = list(statuses)
        self.body = body.encode() if isinstance(body, str) else body
        self.content_type = content_type
        self.delay = delay
        self.requests: list[Request] = []
        self._arrived = anyio.Event()
        self._released = anyio.Event()
        self._runner: web.AppRunner | None = None
        self._port = port
        self._tls = tls

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>`` (no trailing slash); append any path."""
        if self._runner is None:
            raise RuntimeError("the receiver is not running; use `async with Receiver() as r`")
        return f"{'https' if self._tls else 'http'}://127.0.0.1:{self._port}"

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self._port, ssl_context=self._tls)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._released.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_for(self, count: int) -> list[Request]:
        """Wait until at least ``count`` requests arrived and return them all.

        The wait is bounded by :attr:`wait_limit`; wrap the call in
        ``anyio.fail_after`` for a shorter bound.

        Raises:
            TimeoutError: fewer than ``count`` requests within :attr:`wait_limit` seconds.
        """
        with anyio.fail_after(self.wait_limit):
            while len(self.requests) < count:
                await self._arrived.wait()
        return self.requests

    def release(self) -> None:
        """Answer every held request now, and later ones without ``delay``."""
        self._released.set()

    def status_for(self, index: int) -> int:
        """The status the ``index``-th request (0-based) is answered with."""
        return self.statuses[min(index, len(self.statuses) - 1)]

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        index = len(self.requests)
        self.requests.append(
            Request(request.method, request.path, request.query_string, request.headers, body)
        )
        self._arrived.set()
        self._arrived = anyio.Event()
        if self.delay > 0:
            with anyio.move_on_after(self.delay):
                await self._released.wait()
        return web.Response(
            status=self.status_for(index),
            body=self.body,
            headers={"Content-Type": self.content_type},
        )
