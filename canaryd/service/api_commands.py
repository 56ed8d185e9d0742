"""The API's operator commands: start a rollout, promote, abort, pause, resume, approve a
gate (docs/api.md). Each needs the bearer token; a follower refuses them
(:mod:`canaryd.service.api_ha`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial

from aiohttp import web

from canaryd.config.models import CanaryConfig
from canaryd.core import analysis as core
from canaryd.core.analysis import CanaryState
from canaryd.service.api_common import Handler, authorize, canary_summary, json_body, runner_of

REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}")


async def start_rollout(request: web.Request) -> web.Response:
    """Start a rollout of ``revision``."""
    authorize(request)
    runner = runner_of(request)
    body = await json_body(request)
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


COMMANDS: dict[str, Callable[[CanaryConfig, CanaryState, float], core.Decision]] = {
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
    body = await json_body(request)
    unknown = sorted(set(body) - {"force"})
    if unknown:
        raise web.HTTPBadRequest(reason=f"unknown keys: {', '.join(unknown)}")
    force = body.get("force", False)
    if not isinstance(force, bool):
        raise web.HTTPBadRequest(reason="force must be true or false")
    return force


def command(action: str) -> Handler:
    """The handler of one operator command: promote / abort / pause / resume."""
    fn = COMMANDS[action]

    async def handle(request: web.Request) -> web.Response:
        authorize(request)
        runner = runner_of(request)
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
    authorize(request)
    runner = runner_of(request)
    gate = request.match_info["gate"]
    state = await runner.command(lambda s, now: core.approve(runner.spec, s, gate, now))
    return web.json_response(canary_summary(runner.spec, state))
