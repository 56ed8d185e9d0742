"""Outages: Prometheus down, slow or answering garbage fails checks with the reason.

Each test runs a real daemon (in-process, real HTTP) against the session's real
Prometheus, reached through a :class:`~faults.PromProxy`, and stand-in routers and
receivers on 127.0.0.1 (tests/outages_helpers.py).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from daemons import client_for, running_daemon
from faults import PromProxy, StandIn
from outages_helpers import KEY, THRESHOLD, config, crashes, finished, seed
from prom import PrometheusServer
from structlog.testing import capture_logs

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@asynccontextmanager
async def proxied(prometheus: PrometheusServer) -> AsyncIterator[PromProxy]:
    """A :class:`PromProxy` in front of the session's Prometheus, passing queries through."""
    async with StandIn() as server:
        yield PromProxy(prometheus.url, server)


# --------------------------------------------------------------------------- Prometheus


async def _break(proxy: PromProxy, fault: str) -> None:
    if fault == "down":
        await proxy.server.stop()
    else:
        proxy.mode = fault


async def _mend(proxy: PromProxy, fault: str) -> None:
    if fault == "down":
        await proxy.server.start()
    proxy.mode = "pass"


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        ("down", "cannot reach prometheus"),
        ("slow", "did not answer within"),
        ("garbage", "not Prometheus JSON"),
    ],
    ids=["down", "slow-beyond-timeout", "garbage"],
)
async def test_prometheus_outage_fails_checks_with_the_reason_then_recovers(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str, fault: str, reason: str
) -> None:
    """A broken Prometheus fails checks with the reason, rolls back at threshold, then heals."""
    await seed(prometheus, unique_job)
    async with proxied(prometheus) as proxy, StandIn() as router:
        cfg = config(tmp_path, unique_job, proxy.server.url, router.url)
        with capture_logs() as logs:
            async with running_daemon(cfg), client_for(cfg) as client:
                await _break(proxy, fault)
                started = time.monotonic()
                await client.post(f"{KEY}/rollouts", {"revision": "v2"})
                failed = await finished(client, "v2")
                took = time.monotonic() - started
                detail = await client.get(KEY)
                await _mend(proxy, fault)
                await client.post(f"{KEY}/rollouts", {"revision": "v3"})
                healed = await finished(client, "v3")
    assert (failed["phase"], failed["failedChecks"]) == ("Failed", THRESHOLD)
    assert reason in failed["reason"], failed["reason"]
    errors = [m.get("error", "") for c in detail["checks"] for m in c["metrics"]]
    assert sum(reason in e for e in errors) >= THRESHOLD, errors
    assert took < THRESHOLD * 0.3 + 5, f"rollback took {took:.1f}s: ticks were not bounded"
    assert (healed["phase"], healed["failedChecks"]) == ("Succeeded", 0)
    assert not crashes(logs)
