"""The API of a replica that follows (docs/ha.md): reads are served from the database,
changes are refused with the leader's address."""

from __future__ import annotations

from aiohttp import web

from canaryd.service.api_common import DAEMON, Handler


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
