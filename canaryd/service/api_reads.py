"""The API's reads: health, readiness, ``/metrics``, the OpenAPI document, canaries and
their rollouts (docs/api.md)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from canaryd.errors import NotFoundError
from canaryd.service.api_common import DAEMON, authorize_read, canary_summary, runner_of
from canaryd.service.metrics import CONTENT_TYPE
from canaryd.service.openapi import document
from canaryd.service.runtime import CanaryRunner
from canaryd.service.store import dumps

if TYPE_CHECKING:
    from canaryd.service.daemon import Daemon


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
    authorize_read(request)
    daemon = request.app[DAEMON]
    rows = [await _with_last_check(daemon, r) for r in list(daemon.runners.values())]
    body: dict[str, Any] = {"canaries": rows, **daemon.health.replica()}  # docs/ha.md
    return web.json_response(body, dumps=dumps)


async def get_canary(request: web.Request) -> web.Response:
    """One canary with its recent checks and events."""
    authorize_read(request)
    runner = runner_of(request)
    body = canary_summary(runner.spec, runner.state)
    store = runner.services.store
    body["checks"] = await store.history(runner.key, 20)
    body["events"] = await store.events(runner.key, 50)
    body["lastCheck"] = _check_summary(body["checks"][0] if body["checks"] else None)
    return web.json_response(body, dumps=dumps)


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
    authorize_read(request)
    runner = runner_of(request)
    rows = await runner.services.store.rollouts(runner.key, _limit(request))
    return web.json_response({"rollouts": rows}, dumps=dumps)


async def get_rollout(request: web.Request) -> web.Response:
    """One rollout of a canary with its checks and events, oldest first: the newest
    ``history.checksPerRollout`` of each, as retention keeps (also before it next runs)."""
    authorize_read(request)
    runner = runner_of(request)
    rollout_id = request.match_info["rollout"]
    kept = runner.services.settings.history.checksPerRollout
    body = await runner.services.store.rollout(runner.key, rollout_id, kept)
    if body is None:
        raise NotFoundError(f"no rollout {rollout_id} of {runner.key}")
    return web.json_response(body, dumps=dumps)
