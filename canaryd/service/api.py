"""HTTP API (docs/api.md): health, metrics, canaries, rollouts and operator commands.

Mutating endpoints need ``Authorization: Bearer <token>`` (compared in constant
time); so do reads unless ``api.anonymous_read`` is on. ``/healthz``,
``/readyz``, ``/metrics`` and ``/api/v1/openapi.json`` are always open. Every
error is JSON ``{"error": "..."}``; a bad request is never a 500. The routes are
described by :mod:`canaryd.service.openapi`.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog
from aiohttp import web

from canaryd import ui
from canaryd.config.models import CanaryConfig
from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState
from canaryd.errors import CommandError, NotFoundError, RouterError, StoreError
from canaryd.service.limits import LISTEN_BACKLOG, AcceptErrors, RefusedCount, api_connection_cap
from canaryd.service.metrics import CONTENT_TYPE
from canaryd.service.openapi import document
from canaryd.service.runtime import CanaryRunner

if TYPE_CHECKING:
    from canaryd.service.daemon import Daemon

log = structlog.get_logger()

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon", object)  # type: ignore[arg-type]

REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")
SHUTDOWN_SECONDS = 2.0
"""On stop, how long requests in flight may take before their connections are closed."""
IDLE_SECONDS = 15.0
"""A connection without a complete request for this long is closed: idle, kept alive
after an answer, or sending its headers too slowly (docs/reliability.md)."""
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error answer."""
    return web.json_response({"error": message}, status=status, headers=headers)


_KEPT_HEADERS = ("Allow", "WWW-Authenticate")


@web.middleware
async def followers_refuse_changes(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A follower answers changes 503 with the leader's address (docs/ha.md)."""
    daemon = request.app[DAEMON]
    if request.method == "POST" and daemon.health.role == "follower":
        leader = daemon.health.leader_address
        return web.json_response(
            {"error": "this replica follows; send changes to the leader", "leader": leader},
            status=503,
            headers={"Retry-After": "1", **({"Location": leader} if leader else {})},
        )
    return await handler(request)


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


def canary_summary(spec: CanaryConfig, state: CanaryState) -> dict[str, Any]:
    """What the API says about one canary."""
    a = spec.analysis
    return {
        "name": spec.name,
        "namespace": spec.namespace,
        "phase": state.phase.value,
        "revision": state.revision,
        "rolloutId": state.rollout_id,
        "strategy": a.strategy,
        "canaryWeight": state.canary_weight,
        "primaryWeight": state.primary_weight,
        "maxWeight": (a.weights or [0])[-1],
        "failedChecks": state.failed_checks,
        "threshold": a.threshold,
        "iteration": state.iteration,
        "iterations": a.iterations,
        "gate": state.gate,
        "approvals": sorted(state.approvals),
        "reason": state.reason,
        "metadata": dict(state.metadata),
        "startedAt": state.started_at,
        "finishedAt": state.finished_at,
        "routePending": state.route_pending,
    }


def _runner(request: web.Request) -> CanaryRunner:
    key = f"{request.match_info['ns']}/{request.match_info['name']}"
    runner = request.app[DAEMON].runner(key)
    if runner is None:
        raise NotFoundError(f"no canary {key}")
    return runner


def _authorize(request: web.Request) -> None:
    """Require the bearer token.

    Raises:
        HTTPUnauthorized: no token is configured, or the request lacks the right one.
    """
    token = request.app[DAEMON].api_token
    challenge = {"WWW-Authenticate": 'Bearer realm="canaryd"'}
    if token is None:
        raise web.HTTPUnauthorized(
            reason="no API token configured (set api.token_file or api.token_env)",
            headers=challenge,
        )
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        # headers arrive as latin-1 text that may hold lone surrogates; never fail on them
        value.strip().encode("utf-8", "surrogatepass"),
        token.encode(),
    ):
        raise web.HTTPUnauthorized(reason="missing or wrong bearer token", headers=challenge)


def _authorize_read(request: web.Request) -> None:
    """Require the bearer token for reads, unless ``api.anonymous_read`` is on.

    Raises:
        HTTPUnauthorized: reads need the token and the request lacks it.
    """
    if not request.app[DAEMON].settings.api.anonymous_read:
        _authorize(request)


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(reason=f"body is not valid JSON: {exc}") from exc
    except RecursionError:  # the decoder nests one frame per level: bad input, not a crash
        raise web.HTTPBadRequest(reason="body is not valid JSON: nested too deeply") from None
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="body must be a JSON object")
    return data


async def healthz(request: web.Request) -> web.Response:
    """Process alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Config loaded, store open, loops running and on schedule (503 when behind)."""
    status, body = request.app[DAEMON].health.readiness()
    return web.json_response(body, status=status)


async def metrics(request: web.Request) -> web.Response:
    """canaryd's own metrics, in the Prometheus text format."""
    daemon = request.app[DAEMON]
    await daemon.metrics.refresh(daemon)
    return web.Response(body=daemon.metrics.render(), headers={"Content-Type": CONTENT_TYPE})


async def openapi(request: web.Request) -> web.Response:
    """The OpenAPI document of this API."""
    return web.json_response(document())


def _check_summary(record: dict[str, Any] | None) -> dict[str, Any] | None:
    """A check record reduced to when, what and why (the failing metric or webhook)."""
    if record is None:
        return None
    return {k: record.get(k) for k in ("time", "outcome", "reason")}


async def _with_last_check(daemon: Daemon, runner: CanaryRunner) -> dict[str, Any]:
    body = canary_summary(runner.spec, runner.state)
    body["lastCheck"] = _check_summary(await daemon.last_check(runner))
    return body


async def list_canaries(request: web.Request) -> web.Response:
    """Every configured canary with its state and last check."""
    _authorize_read(request)
    daemon = request.app[DAEMON]
    rows = [await _with_last_check(daemon, r) for r in list(daemon.runners.values())]
    body: dict[str, Any] = {"canaries": rows, **daemon.health.replica()}  # docs/ha.md
    return web.json_response(body, dumps=_dumps)


async def get_canary(request: web.Request) -> web.Response:
    """One canary with its recent checks and events."""
    _authorize_read(request)
    runner = _runner(request)
    body = canary_summary(runner.spec, runner.state)
    store = runner.services.store
    body["checks"] = await store.history(runner.key, 20)
    body["events"] = await store.events(runner.key, 50)
    body["lastCheck"] = _check_summary(body["checks"][0] if body["checks"] else None)
    return web.json_response(body, dumps=_dumps)


ROLLOUTS_LIMIT = 200
"""The most rollouts one history answer lists (``?limit=``, default 50)."""


def _limit(request: web.Request, default: int = 50) -> int:
    """The ``limit`` query parameter, 1..``ROLLOUTS_LIMIT``.

    Raises:
        HTTPBadRequest: not a whole number in range.
    """
    raw = request.query.get("limit", str(default))
    # str.isdigit() accepts digits int() refuses (superscripts): ASCII digits only
    if not re.fullmatch(r"[0-9]{1,4}", raw) or not 1 <= int(raw) <= ROLLOUTS_LIMIT:
        raise web.HTTPBadRequest(reason=f"limit must be a whole number from 1 to {ROLLOUTS_LIMIT}")
    return int(raw)


async def list_rollouts(request: web.Request) -> web.Response:
    """A canary's rollouts, newest first (docs/api.md, "History")."""
    _authorize_read(request)
    runner = _runner(request)
    rows = await runner.services.store.rollouts(runner.key, _limit(request))
    return web.json_response({"rollouts": rows}, dumps=_dumps)


async def get_rollout(request: web.Request) -> web.Response:
    """One rollout of a canary with its checks and events, oldest first."""
    _authorize_read(request)
    runner = _runner(request)
    rollout_id = request.match_info["rollout"]
    body = await runner.services.store.rollout(runner.key, rollout_id)
    if body is None:
        raise NotFoundError(f"no rollout {rollout_id} of {runner.key}")
    return web.json_response(body, dumps=_dumps)


def _dumps(value: Any) -> str:
    from canaryd.service.store import dumps

    return dumps(value)


async def start_rollout(request: web.Request) -> web.Response:
    """Start a rollout of ``revision``."""
    _authorize(request)
    runner = _runner(request)
    body = await _json_body(request)
    revision, metadata = body.get("revision"), body.get("metadata", {})
    if not isinstance(revision, str) or not REVISION.fullmatch(revision):
        raise web.HTTPBadRequest(
            reason="revision must be a string of 1-128 letters, digits or ._:/@+-"
        )
    if not isinstance(metadata, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()
    ):
        raise web.HTTPBadRequest(reason="metadata must be an object of strings")
    unknown = sorted(set(body) - {"revision", "metadata"})
    if unknown:
        raise web.HTTPBadRequest(reason=f"unknown keys: {', '.join(unknown)}")
    before = runner.state.rollout_id
    state = await runner.start_rollout(revision, metadata)
    # the revision already under way: 200 with the rollout as it is; else a new one, 201
    return web.json_response(
        canary_summary(runner.spec, state), status=200 if state.rollout_id == before else 201
    )


_COMMANDS: dict[str, Callable[[CanaryConfig, CanaryState, float], core.Decision]] = {
    "abort": core.abort,
    "promote": core.promote,
    "pause": core.pause,
    "resume": core.resume,
}


async def _force(request: web.Request, action: str) -> bool:
    """``promote``'s optional ``{"force": true}`` (overrides closed gates); no other keys.

    Raises:
        HTTPBadRequest: unknown keys, or ``force`` that is not a boolean.
    """
    if action != "promote":
        return False
    body = await _json_body(request)
    unknown = sorted(set(body) - {"force"})
    if unknown:
        raise web.HTTPBadRequest(reason=f"unknown keys: {', '.join(unknown)}")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise web.HTTPBadRequest(reason="force must be true or false")
    return force


def command(action: str) -> Handler:
    """The handler of one operator command: promote / abort / pause / resume."""
    fn = _COMMANDS[action]

    async def handle(request: web.Request) -> web.Response:
        _authorize(request)
        runner = _runner(request)
        force = await _force(request, action)
        skipped = core.skipped_gates(runner.spec, runner.state) if force else []
        if force:
            chosen = partial(core.promote, runner.spec, force=True)
        else:
            chosen = partial(fn, runner.spec)
        # abort/pause/promote need not wait for a tick held by a slow webhook
        state = await runner.command(chosen, interrupt=action != "resume")
        body = canary_summary(runner.spec, state)
        if skipped:  # said in the answer as in the rollout.promoting event
            body["forced"], body["skippedGates"] = True, skipped
        return web.json_response(body)

    handle.__doc__ = f"POST .../{action}"
    return handle


async def approve_gate(request: web.Request) -> web.Response:
    """Open a gate by hand."""
    _authorize(request)
    runner = _runner(request)
    gate = request.match_info["gate"]
    state = await runner.command(lambda s, now: core.approve(runner.spec, s, gate, now))
    return web.json_response(canary_summary(runner.spec, state))


def make_app(daemon: Daemon) -> web.Application:
    """Build the aiohttp application for ``daemon`` (routes: :mod:`canaryd.service.openapi`)."""
    api = daemon.settings.api
    app = web.Application(
        middlewares=[errors_as_json, followers_refuse_changes], client_max_size=api.max_body_bytes
    )
    app[DAEMON] = daemon
    name = r"{name:[A-Za-z0-9._-]+}"
    base = "/api/v1/canaries/{ns:[A-Za-z0-9._-]+}/" + name
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/canaries", list_canaries)
    app.router.add_get(base, get_canary)
    app.router.add_post(base + "/rollouts", start_rollout)
    app.router.add_get(base + "/rollouts", list_rollouts)
    app.router.add_get(base + "/rollouts/{rollout:[A-Za-z0-9._-]+}", get_rollout)
    for action in _COMMANDS:
        app.router.add_post(f"{base}/{action}", command(action))
    app.router.add_post(
        base + "/gates/{gate:rollout|traffic-increase|promotion}/approve", approve_gate
    )
    ui.setup(app, daemon.live, _authorize_read, partial(_describe, daemon))
    return app


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
