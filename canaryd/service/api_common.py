"""What every route of the HTTP API shares: the daemon key, errors, authorization, bodies.

(docs/api.md; the routes: :mod:`canaryd.service.api_reads` and
:mod:`canaryd.service.api_commands`.)
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from canaryd.config.models import CanaryConfig
from canaryd.core.analysis import CanaryState
from canaryd.errors import NotFoundError
from canaryd.service.runtime import CanaryRunner

if TYPE_CHECKING:
    from canaryd.service.daemon import Daemon

DAEMON: web.AppKey[Daemon] = web.AppKey("daemon", object)  # type: ignore[arg-type]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """A JSON error answer."""
    return web.json_response({"error": message}, status=status, headers=headers)


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


def runner_of(request: web.Request) -> CanaryRunner:
    """The runner of the canary the path names.

    Raises:
        NotFoundError: no such canary is configured.
    """
    key = f"{request.match_info['ns']}/{request.match_info['name']}"
    runner = request.app[DAEMON].runner(key)
    if runner is None:
        raise NotFoundError(f"no canary {key}")
    return runner


def authorize(request: web.Request) -> None:
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


def authorize_read(request: web.Request) -> None:
    """Require the bearer token for reads, unless ``api.anonymous_read`` is on.

    Raises:
        HTTPUnauthorized: reads need the token and the request lacks it.
    """
    if not request.app[DAEMON].settings.api.anonymous_read:
        authorize(request)


async def json_body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object body ({} without a body).

    Raises:
        HTTPBadRequest: the body is not a JSON object.
    """
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
