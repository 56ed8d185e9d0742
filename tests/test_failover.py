"""Failover campaign: three replicas on one PostgreSQL while the leader is killed or paused.

Three ``canaryd run`` subprocesses share a real PostgreSQL (``state:
postgresql://…``) and drive rollouts judged on the session's real Prometheus,
routed through a webhook router and alerting through the outbox, all received by
a real local HTTP receiver (the crash campaign's setup, :mod:`campaign`).
A driver starts rollouts one after the other through whichever replica leads,
while a disruptor, at random moments, SIGKILLs the leader (restarting it, as
systemd would) or SIGSTOPs it (a partition) until another replica has taken the
lease, then SIGCONTs it: the old leader must notice, stop, and have every write
it still tries refused.

Invariants checked at the end (docs/ha.md): at every moment only one replica's
decisions were accepted (the epochs of the stored check records and outbox
messages never go back; refused writes are counted from the logs), every rollout
ended with the right verdict, failedChecks never decreased, the router's calls
and final weights match each verdict, every outbox message was delivered at
least once and no idempotency key carried two contents, and the time from
leader loss to the new leader's first decision is reported (p50/max) and stays
within ttl + one interval (plus a tick's own time).

``CANARYD_FAILOVER_SEED=N`` replays a seed (disruption moments and the plan).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import re
import signal
import statistics
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import psycopg
import pytest
import yaml
from campaign import TERMINAL, Daemon, Ledger, Planned, config, drive, plan, wait_ready
from campaign_checks import (
    check_messages_per_rollout,
    check_routes,
    check_verdicts,
    identity,
    keys_by_identity,
)
from daemons import TOKEN, api_url
from postgres import PostgresServer
from prom import PrometheusServer
from receiver import Receiver, Request

from canaryd.client import Client
from canaryd.errors import ClientError
from canaryd.service.store.postgres import PostgresStore

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

SEED = int(os.environ.get("CANARYD_FAILOVER_SEED", str(random.SystemRandom().randrange(10**6))))
TTL = 2.0
"""The lease's ttl (seconds): short, so that a campaign of many failovers stays short."""
INTERVAL = 1.0
"""The canaries' analysis interval (long enough that disruptions land mid-rollout)."""
TICK_SLACK = 1.0
"""What the median takeover may take beyond ttl + interval: the first tick's own queries and
commit on a shared 2-core machine."""
LOAD_SLACK = 4.0
"""What the slowest takeover may take beyond ttl + interval: on a loaded 2-core machine one
takeover in fifteen was measured at 4.2 s (ttl 2 s, interval 1 s). The figures are reported
either way; the bound catches a replica that does not take over."""
REPLICAS = 3
CANARIES = 4
ROLLOUTS_PER_CANARY = 4
MIN_DISRUPTIONS = 15
DEADLINE = 420.0
PAUSE_BETWEEN = (0.3, 2.0)
"""Seconds (uniform) between a new leader's first decision and the next disruption."""


# --------------------------------------------------------------------------- the cluster


class ClusterClient(Client):
    """A client that talks to the replica that leads (found with ``/readyz``).

    Reads go to the leader too: a follower's view lags by up to ``ttl / 3``, and
    the driver decides from a read whether to start a rollout again.
    """

    def __init__(self, urls: list[str]) -> None:
        super().__init__(urls[0], TOKEN, timeout=2.0)
        self.urls = urls
        self.clients = [Client(u, TOKEN, timeout=2.0) for u in urls]
        self.current: int | None = None

    async def __aenter__(self) -> ClusterClient:
        for c in self.clients:
            await c.__aenter__()
        await super().__aenter__()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        for c in self.clients:
            await c.__aexit__(None, None, None)
        await super().__aexit__(None, None, None)

    async def _find_leader(self) -> int | None:
        """The index of the replica whose ``/readyz`` says it leads, if any answers so."""
        assert self._session is not None
        for i, url in enumerate(self.urls):
            try:
                async with self._session.get(f"{url}/readyz") as resp:
                    body = await resp.json(content_type=None)
            except (aiohttp.ClientError, TimeoutError, ValueError):
                continue
            if isinstance(body, dict) and body.get("role") == "leader":
                return i
        return None

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        """Send to the leader; on failure forget it (found again next call) and fail this call."""
        if self.current is None:
            self.current = await self._find_leader()
            if self.current is None:
                raise ClientError("no replica leads right now")
        try:
            return await self.clients[self.current]._request(method, path, body)
        except ClientError:
            self.current = None
            raise


def replica_config(base: Path, url: str, index: int) -> Path:
    """Turn a crash-campaign config into one replica's: PostgreSQL state and a lease."""
    data = yaml.safe_load(base.read_text())
    folder = base.parent / f"r{index}"
    folder.mkdir()
    from support import free_port

    data["listen"] = f"127.0.0.1:{free_port()}"
    data["state"] = url
    data["ha"] = {"cluster": "campaign", "leaseTtl": f"{TTL}s"}
    for canary in data["canaries"]:
        canary["analysis"]["interval"] = f"{INTERVAL}s"
    path = folder / "canaryd.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def db_rows(url: str, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Rows of one query (a fresh connection: the test never holds one across a disruption)."""
    with psycopg.connect(url, connect_timeout=5) as conn:
        return conn.execute(sql, args).fetchall()


def lease_row(url: str) -> tuple[int, int, bool] | None:
    """(leader's process id, epoch, live) of the campaign's lease."""
    rows = db_rows(
        url, "SELECT holder, epoch, expires_at > now() FROM lease WHERE cluster='campaign'"
    )
    if not rows:
        return None
    return int(str(rows[0][0]).split("/")[1]), int(rows[0][1]), bool(rows[0][2])


def newest_epoch(url: str) -> int:
    """The epoch of the newest decision stored (check records)."""
    return int(db_rows(url, "SELECT COALESCE(MAX(epoch), 0) FROM checks")[0][0])


def active(url: str) -> bool:
    """Whether some canary is in a rollout (so a new leader has a decision to make)."""
    states = [json.loads(s) for (s,) in db_rows(url, "SELECT state FROM canaries")]
    return any(s["phase"] not in (*TERMINAL, "Initialized") for s in states)


# --------------------------------------------------------------------------- the disruptor


class Figures:
    """What the disruptor saw."""

    def __init__(self) -> None:
        self.kills = 0
        self.pauses = 0
        self.takeovers: list[float] = []
        """Seconds from leader loss to the new leader's first stored decision."""
        self.unmeasured = 0
        """Disruptions while no rollout was in progress (no decision to time)."""
        self.lost_exits: list[int] = []
        """Exit codes of paused-then-resumed leaders (each must stop by itself)."""

    @property
    def disruptions(self) -> int:
        return self.kills + self.pauses


async def current_leader(
    url: str, replicas: list[Daemon], within: float = 30.0, other_than: Daemon | None = None
) -> Daemon:
    """The replica (this incarnation, not ``other_than``) holding a live lease (bounded wait)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        row = await anyio.to_thread.run_sync(lease_row, url)
        for d in replicas:
            if d is other_than or row is None or not row[2] or not d.alive():
                continue
            if d.proc is not None and d.proc.pid == row[0]:
                return d
        await anyio.sleep(0.05)
    raise AssertionError(f"no live leader within {within:g}s")


async def time_takeover(url: str, old_epoch: int, lost_at: float, figures: Figures) -> None:
    """Wait for the first decision stored under a newer epoch; record how long it took."""
    if not await anyio.to_thread.run_sync(active, url):
        figures.unmeasured += 1
        return
    deadline = lost_at + TTL + INTERVAL + 15.0
    while time.monotonic() < deadline:
        if await anyio.to_thread.run_sync(newest_epoch, url) > old_epoch:
            figures.takeovers.append(time.monotonic() - lost_at)
            return
        await anyio.sleep(0.02)
    if await anyio.to_thread.run_sync(active, url):
        sessions = db_rows(
            url,
            "SELECT pid, state, wait_event_type, wait_event, left(query, 80), "
            "pg_blocking_pids(pid) FROM pg_stat_activity WHERE datname = current_database()",
        )
        raise AssertionError(
            f"no decision of a new leader within {deadline - lost_at:.1f}s; sessions: {sessions}"
        )
    figures.unmeasured += 1  # every rollout ended meanwhile


async def disrupt(
    url: str, replicas: list[Daemon], rng: random.Random, figures: Figures, done: anyio.Event
) -> None:
    """Kill or pause the leader at random moments until the rollouts are done and enough ran."""
    while not (done.is_set() and figures.disruptions >= MIN_DISRUPTIONS):
        await current_leader(url, replicas)
        await anyio.sleep(rng.uniform(*PAUSE_BETWEEN))
        victim = await current_leader(url, replicas)
        old_epoch = (await anyio.to_thread.run_sync(lease_row, url) or (0, 0, False))[1]
        assert victim.proc is not None
        if rng.random() < 0.5:
            await victim.kill()
            lost_at = time.monotonic()
            figures.kills += 1
            victim.start()  # as systemd's Restart= would
            await time_takeover(url, old_epoch, lost_at, figures)
            continue
        victim.proc.send_signal(signal.SIGSTOP)
        lost_at = time.monotonic()
        figures.pauses += 1
        await time_takeover(url, old_epoch, lost_at, figures)
        await current_leader(url, replicas, other_than=victim)  # someone else leads now
        victim.proc.send_signal(signal.SIGCONT)
        try:
            code = await anyio.to_thread.run_sync(victim.proc.wait, 20)
        except subprocess.TimeoutExpired:
            victim.proc.send_signal(signal.SIGABRT)  # faulthandler: where it hangs, in its log
            raise
        figures.lost_exits.append(code)
        victim.start()


# --------------------------------------------------------------------------- invariants


def check_fencing(url: str) -> None:
    """Stored decisions and messages never go back to an older epoch (one leader at a time)."""
    for table in ("checks", "outbox"):
        epochs = [int(e) for (e,) in db_rows(url, f"SELECT epoch FROM {table} ORDER BY id")]
        back = [(i, a, b) for i, (a, b) in enumerate(itertools.pairwise(epochs)) if b < a]
        assert not back, f"{table}: a write of an older epoch after a newer one: {back[:5]}"
        assert epochs and min(epochs) >= 1, f"{table}: a write without an epoch"


def check_delivery(url: str, requests: list[Request]) -> int:
    """Every outbox message was delivered at least once; a key never carried two contents.

    A route re-sent by a new leader carries that leader's epoch in its key
    (docs/ha.md): route keys are compared without it.
    """
    doubled = {
        k: v
        for k, v in keys_by_identity(requests).items()
        if len({re.sub(r":epoch:\d+$", "", key) for key in v}) > 1
    }
    assert not doubled, f"same message under different idempotency keys: {doubled}"
    contents: dict[str, set[str]] = defaultdict(set)
    for r in requests:
        contents[r.headers["Idempotency-Key"]].add(identity(r))
    reused = {k: v for k, v in contents.items() if len(v) > 1}
    assert not reused, f"one idempotency key for different messages: {reused}"
    rows = db_rows(url, "SELECT idem, status FROM outbox")
    received = {r.headers["Idempotency-Key"] for r in requests if r.path != "/routes"}
    lost = [row for row in rows if row[0] not in received]
    undelivered = [row for row in rows if row[1] != "sent"]
    assert not lost, f"outbox messages never received: {lost[:10]}"
    assert not undelivered, f"outbox messages not marked sent: {undelivered[:10]}"
    return len(rows)


def fenced_writes(logs: list[Path]) -> int:
    """Writes the replicas' stores refused (``store.fenced`` log lines)."""
    return sum(p.read_text(errors="replace").count('"store.fenced"') for p in logs if p.exists())


async def drain(url: str, within: float = 60.0) -> None:
    """Wait (bounded) until the outbox is sent and every canary idle."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pending = db_rows(url, "SELECT COUNT(*) FROM outbox WHERE status <> 'sent'")[0][0]
        states = [json.loads(s) for (s,) in db_rows(url, "SELECT state FROM canaries")]
        if pending == 0 and all(s["phase"] in TERMINAL for s in states):
            return
        await anyio.sleep(0.2)
    raise AssertionError(f"the outbox did not drain within {within:g}s")


def campaign_report(
    figures: Figures,
    rollouts: int,
    configs: list[Path],
    messages: int,
    requests: list[Request],
    started: float,
) -> dict[str, Any]:
    """The campaign's figures, printed as JSON: disruptions, takeover times, messages."""
    takeovers = sorted(figures.takeovers)
    return {
        "seed": SEED,
        "replicas": REPLICAS,
        "lease_ttl": TTL,
        "interval": INTERVAL,
        "rollouts": rollouts,
        "kills": figures.kills,
        "pauses": figures.pauses,
        "fenced_writes_refused": fenced_writes([c.parent / "daemon.log" for c in configs]),
        "takeover_p50": round(statistics.median(takeovers), 3) if takeovers else None,
        "takeover_max": round(takeovers[-1], 3) if takeovers else None,
        "takeovers_measured": len(takeovers),
        "takeovers_unmeasured": figures.unmeasured,
        "messages_in_outbox": messages,
        "router_calls": sum(r.path == "/routes" for r in requests),
        "seconds": round(time.monotonic() - started, 1),
    }


# --------------------------------------------------------------------------- the campaign


@pytest.mark.timeout(DEADLINE + 120)
async def test_failover_campaign_keeps_every_promise(
    tmp_path: Path, prometheus: PrometheusServer, postgres: PostgresServer
) -> None:
    """Rollouts driven while leaders are killed or paused end right, fenced, and lose nothing."""
    print(f"failover campaign seed={SEED} (replay: CANARYD_FAILOVER_SEED={SEED})")
    os.environ["PYTHONFAULTHANDLER"] = "1"  # a replica that hangs shows where (SIGABRT)
    rng = random.Random(SEED)
    per_canary = plan(rng, CANARIES, ROLLOUTS_PER_CANARY)
    planned: list[Planned] = [r for rollouts in per_canary for r in rollouts]
    jobs = [f"failover-{SEED}-{i}-{os.getpid()}" for i in range(CANARIES)]
    url = postgres.create_database()
    schema = PostgresStore(url)  # the replicas race to migrate too; the test reads at once
    await schema.open()
    await schema.close()
    ledger, figures = Ledger(), Figures()
    started = time.monotonic()
    async with Receiver(delay=0.02) as receiver:
        base = config(tmp_path, prometheus, receiver.url, jobs)
        configs = [replica_config(base, url, i) for i in range(REPLICAS)]
        replicas = [Daemon(c, c.parent / "daemon.log") for c in configs]
        done = anyio.Event()
        try:
            for d in replicas:
                d.start()
            with anyio.fail_after(DEADLINE):
                async with ClusterClient([api_url(c) for c in configs]) as client:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(
                            disrupt, url, replicas, random.Random(SEED + 1), figures, done
                        )

                        async def all_drivers() -> None:
                            async with anyio.create_task_group() as drivers:
                                for job, rollouts in zip(jobs, per_canary, strict=True):
                                    drivers.start_soon(
                                        drive, client, prometheus, job, rollouts, ledger
                                    )
                            done.set()

                        tg.start_soon(all_drivers)
                    await drain(url)
            async with aiohttp.ClientSession() as session:  # signal handlers are installed
                for c in configs:
                    await wait_ready(api_url(c), session)
            codes = [await d.stop() for d in replicas]
            assert codes == [0] * REPLICAS, f"replicas did not stop cleanly: {codes}"
        except BaseException:
            print(f"campaign failed; seed={SEED}; logs under {tmp_path}")
            raise
        finally:
            for d in replicas:
                if d.alive():
                    assert d.proc is not None
                    d.proc.send_signal(signal.SIGCONT)
                    await d.kill()
        requests = list(receiver.requests)
    check_fencing(url)
    check_verdicts(planned, ledger)
    check_routes(planned, requests)
    messages = check_delivery(url, requests)
    check_messages_per_rollout(planned, requests)
    decreased = {rid: seq for rid, seq in ledger.failed_checks.items() if seq != sorted(seq)}
    assert not decreased, f"failedChecks decreased within a rollout: {decreased}"
    assert all(code != 0 for code in figures.lost_exits), figures.lost_exits
    takeovers = sorted(figures.takeovers)
    report = campaign_report(figures, len(planned), configs, messages, requests, started)
    print(json.dumps(report, indent=2))
    assert figures.disruptions >= MIN_DISRUPTIONS
    assert len(planned) >= 10
    assert takeovers, "no takeover was timed"
    assert statistics.median(takeovers) <= TTL + INTERVAL + TICK_SLACK, report
    assert takeovers[-1] <= TTL + INTERVAL + LOAD_SLACK, report
