"""The dashboard's routes: its static files under ``/ui/`` and the event stream."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import anyio
from aiohttp import web

from canaryd.ui.live import Listener, LiveHub

STATIC = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
"""The files the dashboard serves, by name (nothing else under ``/ui/`` is served)."""

WRITE_SECONDS = 10.0
"""How long one write to a stream may wait for a reader that does not read."""

GONE_CHECK_SECONDS = 1.0
"""How often a quiet stream checks that its reader is still connected."""

_PAGE_HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # nothing from another host, no inline script: the page cannot be made to leak the token
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Authorize = Callable[[web.Request], None]
Describe = Callable[[str], dict[str, Any] | None]


def _files() -> dict[str, bytes]:
    """The static files, read once from the package."""
    folder = resources.files("canaryd.ui") / "static"
    return {name: (folder / name).read_bytes() for name in STATIC}


def _static(files: dict[str, bytes]) -> Handler:
    async def serve_file(request: web.Request) -> web.Response:
        """One of the dashboard's files (``/ui/`` is its page)."""
        name = request.match_info.get("file") or "index.html"
        if name not in files:
            raise web.HTTPNotFound(reason=f"no file {name} in the dashboard")
        headers = {**_PAGE_HEADERS, "Content-Type": STATIC[name]}
        return web.Response(body=files[name], headers=headers)

    return serve_file


def _event(name: str, data: dict[str, Any]) -> bytes:
    """One server-sent event (JSON data on one line: it never holds a newline)."""
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def _write(response: web.StreamResponse, data: bytes) -> None:
    """Write with a bound, so a reader that stopped reading cannot hold the stream forever.

    Raises:
        TimeoutError: the write did not finish within :data:`WRITE_SECONDS`.
        ConnectionError: the reader went away.
    """
    with anyio.fail_after(WRITE_SECONDS):
        await response.write(data)


def _gone(request: web.Request) -> bool:
    """The reader closed its connection (noticed without writing to it)."""
    transport = request.transport
    return transport is None or transport.is_closing()


async def _pump(
    request: web.Request,
    response: web.StreamResponse,
    hub: LiveHub,
    listener: Listener,
    describe: Describe,
) -> None:
    """Write the changed canaries as they change, and heartbeats, until the hub closes.

    A reader that left frees its place within :data:`GONE_CHECK_SECONDS`, not
    only when the next heartbeat fails to be written.

    Raises:
        TimeoutError: a write did not finish in time.
        ConnectionError: the reader went away.
    """
    await _write(response, _event("hello", {"heartbeatSeconds": hub.heartbeat}))
    last_write = anyio.current_time()
    while not hub.closed and not _gone(request):
        with anyio.move_on_after(min(GONE_CHECK_SECONDS, hub.heartbeat)):
            await listener.wake.wait()
        bodies = [b for b in map(describe, listener.take()) if b is not None]
        for body in bodies:
            await _write(response, _event("canary", body))
        if bodies:
            last_write = anyio.current_time()
        elif anyio.current_time() - last_write >= hub.heartbeat and not hub.closed:
            await _write(response, b": heartbeat\n\n")
            last_write = anyio.current_time()


def _stream(hub: LiveHub, authorize: Authorize, describe: Describe) -> Handler:
    async def stream(request: web.Request) -> web.StreamResponse:
        """``GET /api/v1/events/stream``: a ``canary`` event whenever a canary changes."""
        authorize(request)
        if hub.full:
            raise web.HTTPServiceUnavailable(reason="too many open event streams, or stopping")
        with hub.listen() as listener:
            response = web.StreamResponse(
                headers={
                    "Content-Type": "text/event-stream",
                    "Cache-Control": "no-store",
                    "X-Accel-Buffering": "no",  # a proxy in front must not hold events back
                }
            )
            await response.prepare(request)
            # the reader left or stopped reading: end this stream only
            with contextlib.suppress(ConnectionError, TimeoutError):
                await _pump(request, response, hub, listener, describe)
        return response

    return stream


def setup(app: web.Application, hub: LiveHub, authorize: Authorize, describe: Describe) -> None:
    """Add the dashboard and the event stream to the API's ``app``.

    Args:
        app: the API application.
        hub: where canary changes are published.
        authorize: raises ``HTTPUnauthorized`` when the request may not read.
        describe: the API's view of canary ``key`` (None once it is gone).
    """
    files = _files()
    serve_file = _static(files)
    app.router.add_get("/ui", _redirect)
    app.router.add_get("/ui/", serve_file)
    app.router.add_get("/ui/{file:[a-z]+\\.[a-z]+}", serve_file)
    app.router.add_get("/api/v1/events/stream", _stream(hub, authorize, describe))
    hub.reopen()

    async def close_streams(_: web.Application) -> None:
        hub.close()

    app.on_shutdown.append(close_streams)


async def _redirect(request: web.Request) -> web.Response:
    """``/ui`` to ``/ui/`` (the page's relative links need the slash).

    Raises:
        HTTPPermanentRedirect: always.
    """
    raise web.HTTPPermanentRedirect("/ui/")
