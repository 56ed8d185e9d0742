"""A daemon under a low RLIMIT_NOFILE: idle connections and no descriptor left fail no check."""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.error
import urllib.request
from contextlib import suppress
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from daemons import TOKEN, api_url, log_events, write_config
from fdlimits import fd_limit_at_least
from overload_helpers import api_up, daemon_limited, prometheus_config, seed, stopped
from prom import PrometheusServer
from receiver import Receiver
from support import eventually

from canaryd.service.limits import fd_reserve

# --------------------------------------------------------------------------- fd exhaustion

FLOOD = 1050
"""Idle connections of the report in issue #12 (no request, no token)."""

LIMIT = 1024
"""systemd's default soft RLIMIT_NOFILE, under which they exhausted canaryd."""


def call(base: str, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    """One API call with the test token (blocking; the daemon is another process)."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(f"{base}{path}", data=data, method=method)
    req.add_header("Authorization", f"Bearer {TOKEN}")
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def flood_canary(name: str, job: str) -> dict[str, Any]:
    """A canary on ``ovl_success`` of ``job`` (>= 99), one small step per 0.5 s tick."""
    metric = {
        "name": "success",
        "query": f'max(ovl_success{{job="{job}"}})',
        "thresholdRange": {"min": 99},
    }
    analysis = {
        "interval": "0.5s",
        "threshold": 1,
        "stepWeight": 1,
        "maxWeight": 99,
        "metrics": [metric],
    }
    return {"name": name, "namespace": "prod", "router": "lb", "analysis": analysis}


def open_idle(base: str, count: int) -> list[socket.socket]:
    """``count`` TCP connections to the API that never send a byte."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    return [socket.create_connection((host, int(port)), timeout=5) for _ in range(count)]


@pytest.mark.anyio
@pytest.mark.integration
async def test_idle_connections_leave_descriptors_for_checks_and_the_rollback_route(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """1,050 idle connections under a limit of 1,024 fail no check and block no rollback route.

    Every query opens a connection of its own (``Connection: close``, as behind some
    proxies), so each check needs a free descriptor while the flood holds the API's.
    """
    good, bad = f"{unique_job}-good", f"{unique_job}-bad"
    await seed(prometheus, {good: 99.9, bad: 99.9})
    prom = {**prometheus_config(prometheus), "headers": {"Connection": "close"}}
    log = tmp_path / "canaryd.log"
    async with Receiver() as router:
        config = write_config(
            tmp_path,
            [flood_canary("web", good), flood_canary("api", bad)],
            providers={"prom": prom},
            routers={"lb": {"type": "webhook", "url": f"{router.url}/routes", "timeout": "2s"}},
        )
        base = api_url(config)
        assert LIMIT - fd_reserve(1) > 0, "the reserve alone must fit under the limit"
        with daemon_limited(config, log, LIMIT) as proc, fd_limit_at_least(FLOOD + 256):
            await api_up(base, within=20)
            for name in ("web", "api"):
                call(base, "POST", f"/api/v1/canaries/prod/{name}/rollouts", {"revision": "v2"})
            flood = open_idle(base, FLOOD)
            try:
                await anyio.sleep(3.0)  # the good canary keeps checking through the flood
                prometheus.app.set("ovl_success", {"job": bad}, 50.0)  # type: ignore[union-attr]

                async def routed() -> bool:
                    return rolled_back(router)

                await eventually(routed, bool, within=30)
                await anyio.sleep(2.0)
            finally:
                for sock in flood:
                    sock.close()
            await api_up(base, within=30)
            web = call(base, "GET", "/api/v1/canaries/prod/web")
            api = call(base, "GET", "/api/v1/canaries/prod/api")
            await stopped(proc)  # while the router still answers
    assert api["phase"] == "Failed", api
    assert web["failedChecks"] == 0, web
    assert [c for c in web["checks"] if c["outcome"] == "fail"] == []
    assert len(web["checks"]) >= 5  # it did check through the flood
    assert [e for e in log_events(log, "check.failed") if e.get("canary") == "web"] == []
    assert "Traceback" not in log.read_text()
    assert 1 <= len(log_events(log, "api.connection_limit")) <= 2


STARVED = 24
"""A limit below what the daemon's own files (about 12) and the API's minimum share of 16
connections need together: a flood leaves it no descriptor at all."""


@pytest.mark.anyio
@pytest.mark.integration
async def test_checks_hold_while_the_daemon_has_no_descriptor_left(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """A daemon really out of descriptors holds its healthy canary's checks, never fails them."""
    await seed(prometheus, {unique_job: 99.9})
    prom = {**prometheus_config(prometheus), "headers": {"Connection": "close"}}
    log = tmp_path / "canaryd.log"
    async with Receiver() as router:
        config = write_config(
            tmp_path,
            [flood_canary("web", unique_job)],
            providers={"prom": prom},
            routers={"lb": {"type": "webhook", "url": f"{router.url}/routes", "timeout": "2s"}},
        )
        base = api_url(config)
        with daemon_limited(config, log, STARVED) as proc:
            await api_up(base, within=20)
            call(base, "POST", "/api/v1/canaries/prod/web/rollouts", {"revision": "v2"})
            host, port = base.removeprefix("http://").rsplit(":", 1)
            flood = []
            try:
                for _ in range(40):  # more than the daemon has descriptors for
                    sock = socket.socket()
                    sock.setblocking(False)
                    with suppress(BlockingIOError):
                        sock.connect((host, int(port)))
                    flood.append(sock)
                await eventually(
                    partial(
                        asyncio.to_thread, lambda: len(log_events(log, "check.held_by_canaryd"))
                    ),
                    lambda n: n >= 2,
                    within=20,
                )
            finally:
                for sock in flood:
                    sock.close()
            await api_up(base, within=30)
            web = call(base, "GET", "/api/v1/canaries/prod/web")
            await stopped(proc)  # while the router still answers
    assert web["failedChecks"] == 0 and web["phase"] == "Progressing", web
    held = log_events(log, "check.held_by_canaryd")
    assert "Too many open files" in held[0]["reason"], held[0]
    assert log_events(log, "check.failed") == []
    assert "Traceback" not in log.read_text()
    assert len(log_events(log, "api.accept_failed")) <= 3  # at most every 10 s


def rolled_back(router: Receiver) -> bool:
    """Whether the router got a rollback of ``prod/api``."""
    return any(
        isinstance(r.json, dict) and r.json.get("action") == "rollback" for r in router.requests
    )
