"""Stand-in servers that misbehave on purpose, for the outage, crash, fuzz and security tests.

- :class:`StandIn`: an aiohttp server on 127.0.0.1 whose port stays the same
  across :meth:`StandIn.stop` / :meth:`StandIn.start` (a receiver that goes down
  and comes back), whose answer is a replaceable handler, and which records
  every request.
- :class:`PromProxy`: a handler in front of the real Prometheus that passes
  queries through, or answers slowly, or answers garbage.
- :class:`DedupRouter`: a webhook-router handler that honours ``Idempotency-Key``
  as docs/design.md ("Outgoing calls") asks receivers to (a key seen before is
  answered 200 and not applied again), and keeps the weights it applied per canary.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import aiohttp
import anyio
from aiohttp import web
from receiver import Request

Handler = Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]


def reserve_port() -> int:
    """A 127.0.0.1 port that nothing listens on right now (connections are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def answer_ok(request: web.Request, body: bytes) -> web.StreamResponse:
    """The default handler: 200 ``ok``."""
    return web.Response(text="ok")


class StandIn:
    """An HTTP server on a fixed 127.0.0.1 port, started and stopped at will.

    Args:
        handler: answers every request (any method, any path); replace it at any time.
        port: the port (default: a free one reserved now).
    """

    def __init__(self, handler: Handler = answer_ok, *, port: int = 0) -> None:
        self.handler = handler
        self.port = port or reserve_port()
        self.requests: list[Request] = []
        self._runner: web.AppRunner | None = None
        self.closing = anyio.Event()
        """Set on stop: handlers that hang should return."""

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``, valid whether the server is up or down."""
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on the port (again)."""
        self.closing = anyio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True).start()
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening: connections are refused until :meth:`start`."""
        self.closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> StandIn:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Request(request.method, request.path, request.query_string, request.headers, body)
        )
        return await self.handler(request, body)

    async def hang(self, seconds: float) -> None:
        """Sleep up to ``seconds``, less if the server stops meanwhile."""
        with anyio.move_on_after(seconds):
            await self.closing.wait()


class PromProxy:
    """A Prometheus in front of the real one: ``pass``, ``slow`` or ``garbage``.

    Attributes:
        mode: ``pass`` forwards the query; ``slow`` answers after :attr:`delay`;
            ``garbage`` answers 200 with an HTML page.
    """

    def __init__(self, upstream: str, server: StandIn, *, delay: float = 30.0) -> None:
        self.upstream = upstream
        self.server = server
        self.mode = "pass"
        self.delay = delay
        server.handler = self.handle

    async def handle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Answer one query according to :attr:`mode`."""
        if self.mode == "slow":
            await self.server.hang(self.delay)
        elif self.mode == "garbage":
            return web.Response(text="<html>502 Bad Gateway</html>", content_type="text/html")
        async with (
            aiohttp.ClientSession() as session,
            session.post(
                self.upstream + request.path,
                data=body,
                headers={"Content-Type": request.headers.get("Content-Type", "")},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp,
        ):
            return web.Response(
                status=resp.status, body=await resp.read(), content_type="application/json"
            )


class DedupRouter:
    """A mesh controller on ``/routes`` that applies each idempotency key once.

    Other paths (alerts, hooks) are answered 200 and only recorded by the server.

    Attributes:
        applied: per canary, the (primaryWeight, canaryWeight) last applied.
        keys: idempotency key -> the body first seen with it.
        hold: when it returns True for a body, the answer is held back until
            the server stops (the body is applied first: the controller acted,
            canaryd never heard back).
        held: set when a request was held.
        conflicts: (key, first body, later body) for keys reused with another body.
    """

    def __init__(self, server: StandIn) -> None:
        self.server = server
        self.applied: dict[str, tuple[int, int]] = {}
        self.keys: dict[str, dict[str, Any]] = {}
        self.hold: Callable[[dict[str, Any]], bool] = lambda body: False
        self.held = anyio.Event()
        self.conflicts: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
        server.handler = self.handle

    async def handle(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Apply a new key, replay an old one, maybe hold the answer (``/routes`` only)."""
        if request.path != "/routes":
            return web.Response(text="ok")
        data = json.loads(body)
        key = request.headers["Idempotency-Key"]
        if key not in self.keys:
            self.keys[key] = data
            self.applied[data["canary"]] = (data["primaryWeight"], data["canaryWeight"])
            if self.hold(data):
                self.held.set()
                await self.server.hang(60)
        elif self.keys[key] != data:
            self.conflicts.append((key, self.keys[key], data))
        return web.json_response({"applied": True})
