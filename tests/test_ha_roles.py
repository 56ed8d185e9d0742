"""Leader and follower replicas in one process each, on a real PostgreSQL (docs/ha.md)."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import psycopg
import pytest
from daemons import TOKEN, api_url
from postgres import PostgresServer
from receiver import Receiver
from service_helpers import backends, canary, service_config
from structlog.testing import capture_logs
from support import eventually

from canaryd.cli.commands import main
from canaryd.client import Client
from canaryd.config.loader import load_config
from canaryd.errors import ClientError, StoreError
from canaryd.service.daemon import Daemon
from canaryd.service.sdnotify import Notifier
from canaryd.service.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio

KEY = "prod/web"


class Recorder(Notifier):
    """A notifier that keeps what it would tell systemd."""

    def __init__(self) -> None:
        super().__init__(None)
        self.lines: list[str] = []

    def send(self, *lines: str) -> bool:
        self.lines.extend(lines)
        return True


@asynccontextmanager
async def replica(config: Path) -> AsyncIterator[Daemon]:
    """A daemon running in-process until the block ends (cancelled, no clean stop)."""
    daemon = Daemon(config, load_config(config), handle_signals=False, notifier=Recorder())
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        try:
            yield daemon
        finally:
            tg.cancel_scope.cancel()


def configs(tmp_path: Path, url: str, prom: Receiver, router: Receiver) -> list[Path]:
    """Two replicas' configs: same canary and database, their own API address."""
    out = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        cfg = service_config(
            folder, prom, router, [canary()], state=url, ha={"cluster": "t", "leaseTtl": "1s"}
        )
        out.append(cfg)
    return out


async def readyz(url: str) -> dict[str, Any]:
    """``/readyz`` of a replica."""
    async with aiohttp.ClientSession() as s, s.get(f"{url}/readyz") as r:
        body: dict[str, Any] = await r.json()
        return body


async def test_one_leads_the_other_follows_and_refuses_changes(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """The follower shows the leader everywhere, reads from the database and answers changes 503."""
    url = postgres.create_database()
    async with backends() as (prom, router):
        a_cfg, b_cfg = configs(tmp_path, url, prom, router)
        async with replica(a_cfg) as a:
            await eventually(lambda: a.health.role == "leader" and a.ready, what="a leads")
            async with replica(b_cfg) as b:
                await eventually(lambda: b.ready, what="b serves")
                assert b.health.role == "follower"
                follower, leader = api_url(b_cfg), api_url(a_cfg)
                assert (await readyz(follower))["leader"] == leader
                assert (await readyz(leader))["role"] == "leader"
                async with aiohttp.ClientSession() as http, http.get(f"{follower}/metrics") as m:
                    assert m.status == 200
                    assert 'name="web"' in await m.text()
                async with Client(leader, TOKEN) as c:
                    await c.post(f"{KEY}/rollouts", {"revision": "v2"})
                async with Client(follower, TOKEN) as c:
                    with pytest.raises(ClientError, match="HTTP 503"):
                        await c.post(f"{KEY}/abort", {})
                    state = await eventually(
                        lambda: _revision(c), within=5, what="the follower reads the rollout"
                    )
                assert state == "v2"
                assert any(s.startswith(f"STATUS=follower of {leader}") for s in lines(b))
                assert any(s.startswith("STATUS=leader (epoch") for s in lines(a))
                out = await anyio.to_thread.run_sync(
                    _status_output, follower, tmp_path, pytest.MonkeyPatch()
                )
                assert f"this replica is the follower; leader: {leader}" in out


def lines(daemon: Daemon) -> list[str]:
    """What a replica told (its recording) systemd."""
    assert isinstance(daemon.notifier, Recorder)
    return daemon.notifier.lines


async def _revision(c: Client) -> str | None:
    state = await c.get(KEY)
    return state["revision"] if state["revision"] == "v2" else None


def _status_output(url: str, tmp_path: Path, mp: pytest.MonkeyPatch) -> str:
    """What ``canaryd status`` prints against ``url``."""
    import io

    token = tmp_path / "tok"
    token.write_text(TOKEN)
    token.chmod(0o600)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["status", "--url", url, "--token-file", str(token)]) == 0
    return out.getvalue()


async def run_until(daemon: Daemon, stop: anyio.Event) -> None:
    """Run ``daemon`` until ``stop`` is set, then cancel it."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(daemon.run)
        await stop.wait()
        tg.cancel_scope.cancel()


async def test_the_follower_takes_over_when_the_leader_stops(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """Once the leader stops the follower leads at once and finishes the rollout it began."""
    url = postgres.create_database()
    async with backends() as (prom, router):
        a_cfg, b_cfg = configs(tmp_path, url, prom, router)
        a = Daemon(a_cfg, load_config(a_cfg), handle_signals=False, notifier=Recorder())
        b = Daemon(b_cfg, load_config(b_cfg), handle_signals=False, notifier=Recorder())
        stop_a, stop_b = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(run_until, a, stop_a)
            await eventually(lambda: a.ready and a.health.role == "leader", what="a leads")
            tg.start_soon(run_until, b, stop_b)
            await eventually(lambda: b.ready, what="b follows")
            async with Client(api_url(a_cfg), TOKEN) as c:
                await c.post(f"{KEY}/rollouts", {"revision": "v2"})
            await eventually(lambda: a.runners[KEY].state.canary_weight > 0, what="first step")
            stop_a.set()
            lost = anyio.current_time()
            await eventually(lambda: b.health.role == "leader", within=5, what="takeover")
            took = anyio.current_time() - lost
            await eventually(
                lambda: b.runners[KEY].state.phase.value == "Succeeded",
                within=30,
                what="the rollout finishes under the new leader",
            )
            stop_b.set()
        keys = [r.headers["Idempotency-Key"] for r in router.requests]
    assert took < 1.0  # the stopped leader gave its lease up: no wait for the ttl
    assert b.runners[KEY].state.revision == "v2"
    epochs = [int(m.group(1)) for k in keys if (m := re.search(r":epoch:(\d+)$", k))]
    assert len(epochs) == len(keys) > 0, keys  # every router call carries its leader's epoch
    assert epochs == sorted(epochs) and len(set(epochs)) == 2, keys


async def test_a_leader_past_its_lease_deadline_stops_at_once(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """A leader whose lease's local deadline passes logs lease.lost and stops with an error."""
    url = postgres.create_database()
    async with backends() as (prom, router):
        cfg = configs(tmp_path, url, prom, router)[0]
        daemon = Daemon(cfg, load_config(cfg), handle_signals=False, notifier=Recorder())
        failures: list[StoreError] = []

        async def run() -> None:
            try:
                await daemon.run()
            except StoreError as exc:
                failures.append(exc)

        with capture_logs() as logs, anyio.fail_after(15):
            async with anyio.create_task_group() as tg:
                tg.start_soon(run)
                await eventually(
                    lambda: daemon.ready and daemon.health.role == "leader", what="it leads"
                )
                assert daemon.lease is not None
                daemon.lease.clock = lambda: time.monotonic() + 3600.0  # past any deadline
    assert [str(f) for f in failures] == ["lost the leader lease: stopped deciding (docs/ha.md)"]
    assert "lease.lost" in [e["event"] for e in logs]
    assert not daemon.ready


async def test_a_new_leader_decides_a_start_once_while_its_loops_start(
    tmp_path: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A start sent while a new leader's loops load the state is refused, never decided twice.

    The loops read the states, then (held here) the pending routes, then replace the
    follower's copies: a start those copies took in between would be lost to the loop,
    and the client, reading the old revision, would start it again (a second
    ``rollout.started`` under another rollout id).
    """
    url = postgres.create_database()
    loading, gate = anyio.Event(), anyio.Event()
    load_pending = PostgresStore.load_pending

    async def held(store: PostgresStore) -> dict[str, tuple[int, list[dict[str, Any]]]]:
        loading.set()
        await gate.wait()
        return await load_pending(store)

    monkeypatch.setattr(PostgresStore, "load_pending", held)
    answers: list[dict[str, Any]] = []
    async with backends() as (prom, router):
        cfg = configs(tmp_path, url, prom, router)[0]
        async with replica(cfg) as daemon, Client(api_url(cfg), TOKEN) as c:
            with anyio.fail_after(15):
                await loading.wait()  # it holds the lease; its loops are starting
            copy = daemon.runners[KEY]  # the follower's copy of the canary
            with contextlib.suppress(ClientError):  # refused (503), or taken by a copy
                answers.append(await c.post(f"{KEY}/rollouts", {"revision": "v2"}))
            gate.set()
            await eventually(
                lambda: daemon.runners[KEY] is not copy and daemon.health.role == "leader",
                what="its loop leads",
            )
            if (await c.get(KEY))["revision"] != "v2":  # as the campaign's driver does
                answers.append(await c.post(f"{KEY}/rollouts", {"revision": "v2"}))
            final = await c.get(KEY)
    with psycopg.connect(url, connect_timeout=5) as conn:
        started = conn.execute("SELECT rollout FROM events WHERE name='rollout.started'")
        rollouts = [r for (r,) in started.fetchall()]
    assert rollouts == [final["rolloutId"]], rollouts
    assert [a["rolloutId"] for a in answers] == [final["rolloutId"]], answers
