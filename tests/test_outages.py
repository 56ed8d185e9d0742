"""Outages: Prometheus, the router, the receivers and the state store failing under a daemon.

Each test runs a real daemon (in-process, real HTTP) against the session's real
Prometheus, reached through a :class:`~faults.PromProxy` that can go down, answer
slowly or answer garbage, and against stand-in routers and receivers on
127.0.0.1 that can refuse, fail or hang. The state store lives on a small tmpfs
the test mounts, which it fills for real (``tests/disks.py``), or is made
read-only on its own connection (``PRAGMA query_only``); both work as root,
where ``chmod`` stops nothing. The store on a filesystem the kernel turns
read-only is in ``test_disk_faults.py``.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, MutableMapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from daemons import TOKEN, api_url, client_for, running_daemon, wait_for_state, write_config
from disks import Disk, small_tmpfs
from faults import DedupRouter, PromProxy, StandIn
from prom import PrometheusServer, open_provider
from structlog.testing import capture_logs
from support import eventually

from canaryd.client import Client
from canaryd.service.daemon import Daemon
from canaryd.service.store import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

KEY = "prod/web"
THRESHOLD = 3


def config(
    tmp_path: Path,
    job: str,
    prom_url: str,
    router_url: str,
    *,
    hooks_url: str | None = None,
    threshold: int = THRESHOLD,
    max_weight: int = 50,
    state_dir: Path | None = None,
) -> Path:
    """One canary on two gauges of ``job``; alerts and outbox hooks go to ``hooks_url``."""
    analysis: dict[str, Any] = {
        "interval": "0.3s",
        "threshold": threshold,
        "stepWeight": 25,
        "maxWeight": max_weight,
        "metrics": [
            {
                "name": "success-rate",
                "templateRef": {"name": "success"},
                "thresholdRange": {"min": 99},
            },
            {"name": "latency", "templateRef": {"name": "latency"}, "thresholdRange": {"max": 500}},
        ],
    }
    top: dict[str, Any] = {
        "providers": {"prom": {"type": "prometheus", "address": prom_url, "timeout": "2s"}},
        "routers": {"mesh": {"type": "webhook", "url": f"{router_url}/routes", "timeout": "0.5s"}},
        "templates": {
            "success": {"provider": "prom", "query": 'max(out_success{job="{{ target }}"})'},
            "latency": {"provider": "prom", "query": 'max(out_p99_ms{job="{{ target }}"})'},
        },
        "outbox": {"initialBackoff": "0.1s", "maxBackoff": "0.5s", "pollInterval": "0.1s"},
    }
    if state_dir is not None:
        top["state"] = f"sqlite://{state_dir}/state.db"
    canary: dict[str, Any] = {
        "name": "web",
        "namespace": "prod",
        "target": job,
        "router": "mesh",
        "provider": "prom",
        "analysis": analysis,
    }
    if hooks_url is not None:
        analysis["webhooks"] = [
            {"name": "events", "type": "event", "url": f"{hooks_url}/events", "timeout": "0.5s"},
            {"name": "post", "type": "post-rollout", "url": f"{hooks_url}/post", "timeout": "0.5s"},
        ]
        canary["alerts"] = [{"name": "pager", "notifier": "pager"}]
        top["notifiers"] = {
            "pager": {"type": "webhook", "url": f"{hooks_url}/alerts", "timeout": "0.5s"}
        }
    return write_config(tmp_path, [canary], **top)


async def seed(prom: PrometheusServer, job: str, success: float = 99.9, p99: float = 120) -> None:
    """Set the job's gauges and wait until Prometheus answers them."""
    assert prom.app is not None
    prom.app.set_many([("out_success", {"job": job}, success), ("out_p99_ms", {"job": job}, p99)])
    async with open_provider(prom.provider_config()) as provider:
        await eventually(
            lambda: provider.query(
                f'max(out_success{{job="{job}"}}) * 100000 + max(out_p99_ms{{job="{job}"}})',
                budget=2.0,
            ),
            lambda v: v is not None and abs(v - (success * 100000 + p99)) < 1e-6,
            within=15,
        )


async def finished(client: Client, revision: str, within: float = 20.0) -> dict[str, Any]:
    """Wait until the rollout of ``revision`` is Succeeded or Failed; return the state."""
    state: dict[str, Any] = await wait_for_state(
        client,
        KEY,
        lambda s: s["revision"] == revision and s["phase"] in ("Succeeded", "Failed"),
        within=within,
    )
    return state


def crashes(logs: list[MutableMapping[str, Any]]) -> list[MutableMapping[str, Any]]:
    """Log entries that say a tick or a request hit a bug."""
    return [e for e in logs if e["event"] in ("tick.crashed", "api.crashed")]


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


def outbox(db: Path) -> list[tuple[str, str, str]]:
    """(key, target, status) of every outbox row, oldest first."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT idem, target, status FROM outbox ORDER BY id").fetchall()
    return [tuple(r) for r in rows]


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


# --------------------------------------------------------------------------- state store


def _read_only(db: sqlite3.Connection, on: bool) -> None:
    db.execute(f"PRAGMA query_only = {'ON' if on else 'OFF'}")


STORE_FAULTS = ("read-only", "disk-full")


async def _store_fault(daemon: Daemon, disk: Disk, fault: str, on: bool) -> None:
    """Fill or free the store's filesystem, or make its connection read-only or not."""
    if fault == "disk-full":
        await anyio.to_thread.run_sync(disk.fill if on else disk.free)
        return
    store = daemon.services.store
    assert isinstance(store, SqliteStore)
    await store._run(_read_only, store.db, on)


def _stored(db: Path) -> dict[str, Any]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (raw,) = conn.execute("SELECT state FROM canaries WHERE key=?", (KEY,)).fetchone()
    state: dict[str, Any] = json.loads(raw)
    return state


@pytest.mark.parametrize("fault", STORE_FAULTS)
async def test_unwritable_store_holds_the_canary_then_recovers(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str, fault: str
) -> None:
    """An unwritable store freezes state and traffic, logs state.persist_failed, then recovers."""
    await seed(prometheus, unique_job)
    async with StandIn() as server:
        router = DedupRouter(server)
        with small_tmpfs(tmp_path, "4m") as disk, capture_logs() as logs:
            cfg = config(
                tmp_path, unique_job, prometheus.url, server.url, max_weight=75, state_dir=disk.path
            )
            db = disk.path / "state.db"
            async with running_daemon(cfg) as daemon, client_for(cfg) as client:
                await client.post(f"{KEY}/rollouts", {"revision": "v2"})
                held = await wait_for_state(client, KEY, lambda s: s["canaryWeight"] == 25)
                await _store_fault(daemon, disk, fault, True)
                during = await _watch(client, router, seconds=1.5)
                on_disk = await anyio.to_thread.run_sync(_stored, db)
                status, body = await _post(api_url(cfg), f"{KEY}/pause")
                await _store_fault(daemon, disk, fault, False)
                final = await finished(client, "v2")
    assert {(s["phase"], s["canaryWeight"], s["failedChecks"]) for s, _ in during} == {
        (held["phase"], 25, held["failedChecks"])
    }
    assert {w for _, w in during} == {(75, 25)}, "the router moved on unpersisted state"
    assert (on_disk["canary_weight"], on_disk["phase"]) == (25, "Progressing")
    assert status == 503 and "state store" in body["error"], (status, body)
    persist_failed = [e for e in logs if e["event"] == "state.persist_failed"]
    assert persist_failed and all(e["log_level"] == "error" for e in persist_failed)
    assert (final["phase"], final["failedChecks"]) == ("Succeeded", held["failedChecks"])
    assert router.applied[KEY] == (100, 0) and not router.conflicts
    assert not crashes(logs)


async def _watch(
    client: Client, router: DedupRouter, seconds: float
) -> list[tuple[dict[str, Any], tuple[int, int]]]:
    """Poll the API and the router's applied weights for ``seconds``."""
    out = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        out.append((await client.get(KEY), router.applied[KEY]))
        await anyio.sleep(0.05)
    return out


async def _post(url: str, path: str) -> tuple[int, Any]:
    """POST a command with the token; return status and JSON body."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{url}/api/v1/canaries/{path}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as resp,
    ):
        return resp.status, await resp.json()
