"""Outages: a router down or refusing holds checks and reports only what it applied.

Each test runs a real daemon (in-process, real HTTP) against the session's real
Prometheus, reached through a :class:`~faults.PromProxy`, and stand-in routers and
receivers on 127.0.0.1 (tests/outages_helpers.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from daemons import client_for, running_daemon, wait_for_state
from faults import DedupRouter, StandIn
from outages_helpers import KEY, THRESHOLD, config, crashes, finished, seed
from prom import PrometheusServer
from structlog.testing import capture_logs
from support import eventually

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


# --------------------------------------------------------------------------- router


def _note(seen: list[dict[str, Any]], state: dict[str, Any]) -> bool:
    """Remember a polled state (for assertions on every state seen); always True."""
    seen.append(state)
    return True


async def test_router_down_holds_checks_and_never_records_unapplied_weights(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """With the router down after the first step, its errors hold the checks (as in Flagger): no
    weight recorded that it did not apply, no failed check; metrics failing meanwhile still roll
    back, pending until the router answers, and the rollback is then reported once."""
    await seed(prometheus, unique_job)
    async with StandIn() as server:
        router = DedupRouter(server)
        dedupe = server.handler

        async def down_after_the_first_step(
            request: web.Request, body: bytes
        ) -> web.StreamResponse:
            if router.applied.get(KEY, (100, 0)) != (100, 0):
                return web.Response(status=503, text="down")  # until the test stops it for real
            return await dedupe(request, body)

        server.handler = down_after_the_first_step
        cfg = config(tmp_path, unique_job, prometheus.url, server.url)
        seen: list[dict[str, Any]] = []
        with capture_logs() as logs:
            async with running_daemon(cfg), client_for(cfg) as client:
                await client.post(f"{KEY}/rollouts", {"revision": "v2"})
                await wait_for_state(client, KEY, lambda s: s["canaryWeight"] == 25)
                await server.stop()  # connection refused from now on
                await eventually(  # more refused routes than threshold failed checks would take
                    lambda: sum(e["event"] == "router.failed" for e in logs),
                    lambda n: n > THRESHOLD,
                    within=20,
                )
                held = await client.get(KEY)
                await seed(prometheus, unique_job, success=90.0)
                failed = await wait_for_state(
                    client, KEY, lambda s: _note(seen, s) and s["phase"] == "Failed"
                )
                server.handler = dedupe
                await server.start()
                state = await wait_for_state(client, KEY, lambda s: not s["routePending"])
                events = (await client.get(KEY))["events"]
    assert (held["phase"], held["canaryWeight"], held["failedChecks"]) == ("Progressing", 25, 0)
    errors = [e for e in logs if e["event"] == "router.failed"]
    assert all(e["retrying"] and e["error"].startswith("router mesh: ") for e in errors), errors
    assert all(s["canaryWeight"] == 25 for s in seen), [s["canaryWeight"] for s in seen]
    assert [s["failedChecks"] for s in seen] == sorted(s["failedChecks"] for s in seen)
    assert failed["routePending"] and failed["reason"].startswith("success-rate 90"), failed
    assert (state["failedChecks"], state["canaryWeight"]) == (THRESHOLD, 0), state
    checks = [e.get("reason", "") for e in events if e["event"] == "check.failed"]
    assert len(checks) == THRESHOLD and all(r.startswith("success-rate") for r in checks), checks
    assert [e["event"] for e in events].count("rollout.rolled_back") == 1
    assert router.applied[KEY] == (100, 0)
    assert [b["action"] for b in router.keys.values()] == ["route", "rollback"]


async def test_router_refusing_the_promotion_keeps_it_under_way_and_never_fails_a_check(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """While the router answers 503 to promote (it may have applied it), the rollout is Promoting
    with the route pending: never a failed check, never a rollback, never Succeeded; once the
    router takes promote the promotion finishes."""
    await seed(prometheus, unique_job)
    async with StandIn() as server:
        router = DedupRouter(server)
        dedupe = server.handler
        refused: list[str] = []

        async def refuse_promote(request: web.Request, body: bytes) -> web.StreamResponse:
            if request.path == "/routes" and json.loads(body)["action"] == "promote":
                refused.append("promote")
                return web.Response(status=503, text="deployer busy")
            return await dedupe(request, body)

        server.handler = refuse_promote
        cfg = config(tmp_path, unique_job, prometheus.url, server.url, threshold=2)
        seen: list[dict[str, Any]] = []
        async with running_daemon(cfg), client_for(cfg) as client:
            await client.post(f"{KEY}/rollouts", {"revision": "v2"})
            await wait_for_state(client, KEY, lambda s: _note(seen, s) and s["routePending"])
            # 4 ticks of 3 attempts each: twice what threshold 2 would have rolled back on
            await eventually(lambda: _refusals(refused), lambda n: n >= 4 * 3, within=20)
            pending = await client.get(KEY)
            server.handler = dedupe
            final = await finished(client, "v2")
            events = [e["event"] for e in (await client.get(KEY))["events"]]
    assert {s["phase"] for s in seen} <= {"Progressing", "Promoting"}
    assert (pending["phase"], pending["routePending"]) == ("Promoting", True), pending
    assert (pending["canaryWeight"], pending["failedChecks"]) == (50, 0), pending
    assert (final["phase"], final["canaryWeight"], final["failedChecks"]) == ("Succeeded", 0, 0)
    assert "check.failed" not in events and "rollout.rolled_back" not in events
    actions = [(b["action"], b["canaryWeight"]) for b in router.keys.values()]
    assert actions == [("route", 25), ("route", 50), ("promote", 50), ("route", 0)]
    assert router.applied[KEY] == (100, 0)


async def test_router_refusing_the_rollback_reports_it_only_once_applied(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """While the router answers 503 to the rollback route, no rollout.rolled_back event, alert
    or event hook and no post-rollout hook exist (rollback.pending is alerted instead) and
    `status` says the rollback is pending; once the router takes it, each arrives exactly once."""
    await seed(prometheus, unique_job, success=90.0)
    async with StandIn() as server, StandIn() as hooks:
        router = DedupRouter(server)
        dedupe = server.handler
        refused: list[str] = []

        async def refuse_rollback(request: web.Request, body: bytes) -> web.StreamResponse:
            if request.path == "/routes" and json.loads(body)["action"] == "rollback":
                refused.append("rollback")
                return web.Response(status=503, text="lb reloading")
            return await dedupe(request, body)

        server.handler = refuse_rollback
        cfg = config(tmp_path, unique_job, prometheus.url, server.url, hooks_url=hooks.url)
        with capture_logs() as logs:
            async with running_daemon(cfg), client_for(cfg) as client:
                await client.post(f"{KEY}/rollouts", {"revision": "v2"})
                # 4 ticks of 3 attempts each after the rollback was decided
                await eventually(lambda: _refusals(refused), lambda n: n >= 4 * 3, within=20)
                pending = await client.get(KEY)
                await eventually(  # the pending alert was delivered: so would a rolled_back be
                    lambda: _seen(hooks, "/alerts"),
                    lambda seen: "rollback.pending" in seen,
                    within=10,
                )
                before = {path: _delivered(hooks, path) for path in ("/alerts", "/events")}
                posts_before = _delivered(hooks, "/post")
                server.handler = dedupe
                final = await wait_for_state(client, KEY, lambda s: not s["routePending"])
                await eventually(
                    lambda: _seen(hooks, "/post"), lambda seen: len(seen) == 1, within=10
                )
                await anyio.sleep(1.0)  # three more ticks: nothing is reported twice
                after = {path: _delivered(hooks, path) for path in ("/alerts", "/events", "/post")}
                recorded = [e["event"] for e in (await client.get(KEY))["events"]]
    assert (pending["phase"], pending["routePending"], pending["canaryWeight"]) == (
        "Failed",
        True,
        25,
    ), pending
    assert all("rollout.rolled_back" not in seen for seen in before.values()), before
    assert "rollout.rolled_back" not in [e["event"] for e in pending["events"]]
    assert "rollback.pending" in [e["event"] for e in pending["events"]]
    assert posts_before == []
    assert recorded.count("rollout.rolled_back") == 1, recorded
    assert (final["phase"], final["canaryWeight"], final["primaryWeight"]) == ("Failed", 0, 100)
    assert after["/alerts"].count("rollout.rolled_back") == 1, after["/alerts"]
    assert after["/events"].count("rollout.rolled_back") == 1, after["/events"]
    assert len(after["/post"]) == 1
    assert [b["action"] for b in router.keys.values()][-1] == "rollback"
    assert router.applied[KEY] == (100, 0)
    assert not crashes(logs)


async def _seen(server: StandIn, path: str) -> list[str]:
    """:func:`_delivered`, for :func:`eventually`."""
    return _delivered(server, path)


def _delivered(server: StandIn, path: str) -> list[str]:
    """The event names delivered to ``path``, one per idempotency key (redeliveries once)."""
    names: dict[str, str] = {}
    for r in server.requests:
        if r.path == path:
            body = json.loads(r.body)
            event = body.get("event")
            name = event.get("event") if isinstance(event, dict) else event
            names.setdefault(r.headers["Idempotency-Key"], str(name))
    return list(names.values())


async def test_router_failing_after_promote_never_rolls_back(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """Once the router accepted promote, its 503s are retried and alerted: never counted as
    failed checks, never a rollback; the promotion finishes when the router is back."""
    await seed(prometheus, unique_job)
    async with StandIn() as server:
        router = DedupRouter(server)
        dedupe = server.handler
        refused: list[str] = []

        async def fail_after_promote(request: web.Request, body: bytes) -> web.StreamResponse:
            if request.path == "/routes" and any(
                b["action"] == "promote" for b in router.keys.values()
            ):
                refused.append(json.loads(body)["action"])
                return web.Response(status=503, text="lb reloading")
            return await dedupe(request, body)

        server.handler = fail_after_promote
        cfg = config(tmp_path, unique_job, prometheus.url, server.url, threshold=2)
        async with running_daemon(cfg), client_for(cfg) as client:
            await client.post(f"{KEY}/rollouts", {"revision": "v2"})
            await wait_for_state(client, KEY, lambda s: s["phase"] == "Promoting")
            # 4 ticks of 3 attempts each: twice what threshold 2 would have rolled back on
            await eventually(lambda: _refusals(refused), lambda n: n >= 4 * 3, within=20)
            promoting = await client.get(KEY)
            server.handler = dedupe
            final = await finished(client, "v2")
            events = [e["event"] for e in (await client.get(KEY))["events"]]
    assert (promoting["phase"], promoting["failedChecks"]) == ("Promoting", 0), promoting
    assert set(refused) == {"route"}
    assert (final["phase"], final["failedChecks"], final["canaryWeight"]) == ("Succeeded", 0, 0)
    assert "router.failed" in events and "rollout.rolled_back" not in events
    assert "rollback" not in [b["action"] for b in router.keys.values()]
    assert router.applied[KEY] == (100, 0)


async def _refusals(refused: list[str]) -> int:
    """How many route requests the router refused so far."""
    return len(refused)
