"""Outages: receivers refusing, failing or hanging; the outbox holds, then drains in order.

Each test runs a real daemon (in-process, real HTTP) against the session's real
Prometheus, reached through a :class:`~faults.PromProxy`, and stand-in routers and
receivers on 127.0.0.1 (tests/outages_helpers.py).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from daemons import client_for, running_daemon
from faults import StandIn
from outages_helpers import KEY, config, finished, outbox, seed
from prom import PrometheusServer
from support import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


# --------------------------------------------------------------------------- receivers


async def _refuse(server: StandIn) -> None:
    await server.stop()


async def _fail(server: StandIn) -> None:
    async def fail(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.Response(status=503, text="down for maintenance")

    server.handler = fail


async def _hang(server: StandIn) -> None:
    async def hang(request: web.Request, body: bytes) -> web.StreamResponse:
        await server.hang(30)
        return web.Response(text="late")

    server.handler = hang


RECEIVER_FAULTS: dict[str, Callable[[StandIn], Any]] = {
    "refused": _refuse,
    "http-503": _fail,
    "hanging": _hang,
}


@pytest.mark.parametrize("fault", list(RECEIVER_FAULTS), ids=list(RECEIVER_FAULTS))
async def test_receivers_down_outbox_holds_then_drains_in_order(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str, fault: str
) -> None:
    """With receivers down a rollout still ends; its messages wait, then all arrive in order."""
    await seed(prometheus, unique_job)
    async with StandIn() as router, StandIn() as hooks:
        await RECEIVER_FAULTS[fault](hooks)
        cfg = config(tmp_path, unique_job, prometheus.url, router.url, hooks_url=hooks.url)
        db = tmp_path / "state.db"
        async with running_daemon(cfg), client_for(cfg) as client:
            await client.post(f"{KEY}/rollouts", {"revision": "v2"})
            state = await finished(client, "v2", within=10)
            await anyio.sleep(1.0)  # several retry rounds
            held = outbox(db)
            hooks.handler = _ok
            if fault == "refused":
                await hooks.start()
            await eventually(
                lambda: anyio.to_thread.run_sync(outbox, db),
                lambda rows: all(r[2] == "sent" for r in rows),
                within=15,
            )
    assert state["phase"] == "Succeeded"
    assert held and {r[2] for r in held} == {"pending"}, held
    # only the oldest pending message is ever tried, so first arrivals follow the outbox order
    first_seen = list(dict.fromkeys(r.headers["Idempotency-Key"] for r in hooks.requests))
    assert first_seen == [r[0] for r in outbox(db)], "not delivered in order, or not all"
    targets = {r[1] for r in held}
    assert targets == {"alert:pager", "hook:events", "hook:post"}


async def _ok(request: web.Request, body: bytes) -> web.StreamResponse:
    return web.Response(text="ok")
