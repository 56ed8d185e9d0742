"""Outages: a state store full or read-only holds the canary, then recovers.

Each test runs a real daemon (in-process, real HTTP) against the session's real
Prometheus, reached through a :class:`~faults.PromProxy`, and stand-in routers and
receivers on 127.0.0.1 (tests/outages_helpers.py).
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from daemons import TOKEN, api_url, client_for, running_daemon, wait_for_state
from disks import Disk, small_tmpfs
from faults import DedupRouter, StandIn
from outages_helpers import KEY, config, crashes, finished, seed
from prom import PrometheusServer
from structlog.testing import capture_logs

from canaryd.client import Client
from canaryd.service.daemon import Daemon
from canaryd.service.store import SqliteStore

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


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
