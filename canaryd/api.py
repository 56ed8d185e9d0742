"""HTTP API (DESIGN section 5): health, canaries, rollouts and operator commands.

Mutating endpoints need ``Authorization: Bearer <token>`` (compared in constant
time). Every error is JSON ``{"error": "..."}``; a bad request is never a 500.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import structlog
from aiohttp import web

from canaryd import analysis as core
from canaryd.analysis import CanaryState
from canaryd.config import CanaryConfig, read_secret
from canaryd.errors import CommandError, NotFoundError, StoreError
from canaryd.runtime import CanaryRunner

if TYPE_CHECKING:
    from canaryd.daemon import Daemon

log = structlog.get_logger()

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon", object)  # type: ignore[arg-type]
TOKEN: web.AppKey[str | None] = web.AppKey("token", object)  # type: ignore[arg-type]

REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str) -> web.Response:
    """A JSON error answer."""
    return web.json_response({"error": message}, status=status)


@web.middleware
async def errors_as_json(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every failure into a JSON error with the right status."""
    try:
        return await handler(request)
    except NotFoundError as exc:
        return error(404, str(exc))
    except CommandError as exc:
        return error(409, str(exc))
    except StoreError as exc:
        log.error("api.store_failed", error=str(exc))
        return error(503, f"state store unavailable: {exc}")
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason or "error")
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
    token = request.app[TOKEN]
    if token is None:
        raise web.HTTPUnauthorized(reason="no API token configured (set api.token_file)")
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
        raise web.HTTPUnauthorized(reason="missing or wrong bearer token")


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        data = json.loads(await request.read())
    except (ValueError, UnicodeDecodeError) as exc:
        raise web.HTTPBadRequest(reason=f"body is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise web.HTTPBadRequest(reason="body must be a JSON object")
    return data


async def healthz(request: web.Request) -> web.Response:
    """Process alive."""
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Config loaded, store open, loops running."""
    daemon = request.app[DAEMON]
    if not daemon.ready:
        return error(503, "not ready")
    return web.json_response({"status": "ready", "canaries": len(daemon.runners)})


async def list_canaries(request: web.Request) -> web.Response:
    """Every configured canary with its state."""
    runners = request.app[DAEMON].runners.values()
    return web.json_response({"canaries": [canary_summary(r.spec, r.state) for r in runners]})


async def get_canary(request: web.Request) -> web.Response:
    """One canary with its recent checks and events."""
    runner = _runner(request)
    body = canary_summary(runner.spec, runner.state)
    store = runner.services.store
    body["checks"] = await store.history(runner.key, 20)
    body["events"] = await store.events(runner.key, 50)
    return web.json_response(body, dumps=_dumps)


def _dumps(value: Any) -> str:
    from canaryd.store import dumps

    return dumps(value)


async def start_rollout(request: web.Request) -> web.Response:
    """Start a rollout of ``revision``."""
    _authorize(request)
    runner = _runner(request)
    body = await _json_body(request)
    revision, metadata = body.get("revision"), body.get("metadata", {})
    if not isinstance(revision, str) or not REVISION.match(revision):
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
    state = await runner.start_rollout(revision, metadata)
    return web.json_response(canary_summary(runner.spec, state), status=201)


_COMMANDS: dict[str, Callable[[CanaryConfig, CanaryState, float], core.Decision]] = {
    "abort": core.abort,
    "promote": core.promote,
    "pause": core.pause,
    "resume": core.resume,
}


async def command(request: web.Request) -> web.Response:
    """promote / abort / pause / resume."""
    _authorize(request)
    runner = _runner(request)
    fn = _COMMANDS[request.match_info["action"]]
    state = await runner.command(lambda s, now: fn(runner.spec, s, now))
    return web.json_response(canary_summary(runner.spec, state))


async def approve_gate(request: web.Request) -> web.Response:
    """Open a gate by hand."""
    _authorize(request)
    runner = _runner(request)
    gate = request.match_info["gate"]
    state = await runner.command(lambda s, now: core.approve(runner.spec, s, gate, now))
    return web.json_response(canary_summary(runner.spec, state))


def make_app(daemon: Daemon) -> web.Application:
    """Build the aiohttp application for ``daemon``.

    Raises:
        ValueError: the token file cannot be read or is readable by others.
    """
    api = daemon.settings.api
    app = web.Application(middlewares=[errors_as_json], client_max_size=api.max_body_bytes)
    app[DAEMON] = daemon
    secret = read_secret(api.token_file, api.token_env)
    app[TOKEN] = secret.get_secret_value() if secret else None
    name = r"{name:[A-Za-z0-9._-]+}"
    base = "/api/v1/canaries/{ns:[A-Za-z0-9._-]+}/" + name
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/v1/canaries", list_canaries)
    app.router.add_get(base, get_canary)
    app.router.add_post(base + "/rollouts", start_rollout)
    app.router.add_post(base + "/{action:abort|promote|pause|resume}", command)
    app.router.add_post(
        base + "/gates/{gate:rollout|traffic-increase|promotion}/approve", approve_gate
    )
    return app


async def serve(daemon: Daemon, *, task_status: anyio.abc.TaskStatus[None]) -> None:
    """Serve the API on ``listen`` until cancelled.

    Raises:
        StoreError: never; listed for callers: errors surface as OSError on bind.
    """
    app = make_app(daemon)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    host, port = daemon.settings.listen_host_port
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        task_status.started()
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()
