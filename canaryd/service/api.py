"""HTTP API (docs/api.md): health, metrics, canaries, rollouts and operator commands.

Mutating endpoints need ``Authorization: Bearer <token>`` (compared in constant
time); so do reads unless ``api.anonymous_read`` is on. ``/healthz``,
``/readyz``, ``/metrics`` and ``/api/v1/openapi.json`` are always open. Every
error is JSON ``{"error": "..."}``; a bad request is never a 500. The routes are
described by :mod:`canaryd.service.openapi`.

This module builds the application and serves it; the routes are grouped by
concern: reads (:mod:`canaryd.service.api_reads`), operator commands
(:mod:`canaryd.service.api_commands`), a follower's refusal of changes
(:mod:`canaryd.service.api_ha`), and what they share
(:mod:`canaryd.service.api_common`).
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog
from aiohttp import web

from canaryd import ui
from canaryd.errors import CommandError, NotFoundError, RouterError, StoreError
from canaryd.service import api_commands, api_reads
from canaryd.service.api_common import DAEMON, Handler, authorize_read, canary_summary, error
from canaryd.service.api_ha import followers_refuse_changes
from canaryd.service.limits import LISTEN_BACKLOG, AcceptErrors, RefusedCount, api_connection_cap

if TYPE_CHECKING:
    from canaryd.service.daemon import Daemon

log = structlog.get_logger()

SHUTDOWN_SECONDS = 2.0
"""On stop, how long requests in flight may take before their connections are closed."""
IDLE_SECONDS = 15.0
"""A connection without a complete request for this long is closed: idle, kept alive
after an answer, or sending its headers too slowly (docs/reliability.md)."""


_KEPT_HEADERS = ("Allow", "WWW-Authenticate")


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error with the right status."""
    limit = request.app[DAEMON].settings.api.max_body_bytes
    try:
        if request.content_length is not None and request.content_length > limit:
            raise web.HTTPRequestEntityTooLarge(limit, request.content_length)
        return await handler(request)
    except web.HTTPRequestEntityTooLarge:
        return error(413, f"request body larger than {limit} bytes")
    except NotFoundError as exc:
        return error(404, str(exc))
    except CommandError as exc:
        return error(409, str(exc))
    except RouterError as exc:  # an operator command's route was refused; nothing counted
        return error(502, f"router refused the command: {exc}")
    except StoreError as exc:
        log.error("api.store_failed", error=str(exc))
        return error(503, f"state store unavailable: {exc}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kept = {h: exc.headers[h] for h in _KEPT_HEADERS if h in exc.headers}
        return error(exc.status, exc.reason or "error", kept)
    except Exception:
        log.exception("api.crashed", path=request.path)
        return error(500, "internal error (logged)")


def make_app(daemon: Daemon) -> web.Application:
    """Build the aiohttp application for ``daemon`` (routes: :mod:`canaryd.service.openapi`)."""
    api = daemon.settings.api
    app = web.Application(
        middlewares=[errors_as_json, followers_refuse_changes], client_max_size=api.max_body_bytes
    )
    app[DAEMON] = daemon
    _add_routes(app)
    ui.setup(app, daemon.live, authorize_read, partial(_describe, daemon))
    return app


def _add_routes(app: web.Application) -> None:
    """Every route, reads (:mod:`~canaryd.service.api_reads`) and operator commands
    (:mod:`~canaryd.service.api_commands`); a path's methods are registered together."""
    name = r"{name:[A-Za-z0-9._-]+}"
    base = "/api/v1/canaries/{ns:[A-Za-z0-9._-]+}/" + name
    app.router.add_get("/healthz", api_reads.healthz)
    app.router.add_get("/readyz", api_reads.readyz)
    app.router.add_get("/metrics", api_reads.metrics)
    app.router.add_get("/api/v1/openapi.json", api_reads.openapi)
    app.router.add_get("/api/v1/canaries", api_reads.list_canaries)
    app.router.add_get(base, api_reads.get_canary)
    app.router.add_post(base + "/rollouts", api_commands.start_rollout)
    app.router.add_get(base + "/rollouts", api_reads.list_rollouts)
    app.router.add_get(base + "/rollouts/{rollout:[A-Za-z0-9._-]+}", api_reads.get_rollout)
    for action in api_commands.COMMANDS:
        app.router.add_post(f"{base}/{action}", api_commands.command(action))
    app.router.add_post(
        base + "/gates/{gate:rollout|traffic-increase|promotion}/approve",
        api_commands.approve_gate,
    )


def _describe(daemon: Daemon, key: str) -> dict[str, Any] | None:
    """What the API says about canary ``key`` now (the live stream's ``canary`` event)."""
    runner = daemon.runner(key)
    return None if runner is None else canary_summary(runner.spec, runner.state)


async def serve(daemon: Daemon, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Serve the API on ``listen`` until cancelled.

    Raises:
        OSError: the address cannot be listened on (in use, not permitted).
    """
    app = make_app(daemon)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=SHUTDOWN_SECONDS,
        keepalive_timeout=IDLE_SECONDS,
    )
    await runner.setup()
    host, port = daemon.settings.listen_host_port
    loop = asyncio.get_running_loop()
    handler = loop.get_exception_handler()
    loop.set_exception_handler(AcceptErrors(handler))
    server: asyncio.Server | None = None
    try:
        capped = _Capped(
            runner.server, RefusedCount(api_connection_cap(len(daemon.settings.providers)))
        )
        server = await loop.create_server(
            capped, host, port, reuse_address=True, backlog=LISTEN_BACKLOG
        )
        daemon.api_refused = capped.refused
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            if server is not None:
                server.close()
            await runner.cleanup()
            loop.set_exception_handler(handler)


class _Capped:
    """The API's protocol factory: aiohttp's, until ``refused.cap`` connections are open.

    A connection beyond the cap is closed (reset) as soon as it is accepted, so the
    API never holds more descriptors than :func:`canaryd.service.limits.api_connection_cap`.
    """

    def __init__(self, server: web.Server | None, refused: RefusedCount) -> None:
        assert server is not None  # AppRunner.setup() made it
        self.server = server
        self.refused = refused

    def __call__(self) -> asyncio.BaseProtocol:
        """aiohttp's handler for a new connection, or one that closes it at once."""
        if len(self.server.connections) >= self.refused.cap:
            self.refused.refused()
            return _Refuse()
        return self.server()


class _Refuse(asyncio.Protocol):
    """Closes the connection it is given, at once, with a reset (no lingering state)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Drop the connection."""
        transport.abort()  # type: ignore[attr-defined]  # a stream transport
