"""The crash campaign's machinery: the seeded plan, the daemon config, a killable daemon, drivers.

Used by tests/test_crash_campaign.py, tests/test_crash_campaign_phases.py and
tests/test_failover.py; what the campaign checks at the end is in tests/campaign_checks.py.
``CANARYD_CAMPAIGN=long`` runs a longer campaign; ``CANARYD_CAMPAIGN_SEED=N``
replays a seed (kill moments and the healthy/failing plan; thread timing differs).
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
from daemons import write_config
from prom import PrometheusServer, open_provider
from support import eventually

from canaryd.client import Client
from canaryd.errors import ClientError

LONG = os.environ.get("CANARYD_CAMPAIGN") == "long"
SEED = int(os.environ.get("CANARYD_CAMPAIGN_SEED", "20240808"))
NAMESPACE = "campaign"
TERMINAL = ("Succeeded", "Failed")
HEALTHY = (99.9, 120.0)
BREACHES = ((80.0, 120.0, "success-rate 80 < min 99"), (99.9, 900.0, "latency 900 > max 500"))


RECEIVER_DELAY = 0.05
"""Receivers hold each answer back a little, so kills also land between a send and its 2xx."""


@dataclass(frozen=True)
class Profile:
    """How big a campaign is."""

    canaries: int
    rollouts_per_canary: int
    min_kills: int
    kill_after: tuple[float, float]
    """A mid-work kill comes this many seconds (uniform) after the API first answered."""
    deadline: float
    """Seconds the whole campaign may take before it fails."""


PROFILE = (
    Profile(canaries=6, rollouts_per_canary=12, min_kills=150, kill_after=(0.05, 3.0), deadline=900)
    if LONG
    else Profile(
        canaries=5, rollouts_per_canary=5, min_kills=30, kill_after=(0.05, 2.0), deadline=200
    )
)


@dataclass(frozen=True)
class Planned:
    """One rollout of the plan: its canary, revision and whether its metrics are healthy."""

    canary: str
    revision: str
    healthy: bool
    breach: int = 0


@dataclass
class Ledger:
    """What the driver saw: verdicts, failedChecks over time, kills."""

    verdicts: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    failed_checks: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    """rolloutId -> failedChecks in the order observed (API polls and state reads)."""
    kills: int = 0
    kills_before_ready: int = 0
    starts: int = 0
    quick_checks: int = 0
    faults: int = 0
    """Faults of a phase: times the disk was filled, or remove/add-back reload rounds."""

    def observe(self, rollout_id: str | None, failed: int) -> None:
        """Record one persisted failedChecks value of a rollout."""
        if rollout_id:
            self.failed_checks[rollout_id].append(failed)


def plan(
    rng: random.Random, canaries: int = PROFILE.canaries, each: int = PROFILE.rollouts_per_canary
) -> list[list[Planned]]:
    """Per canary, its rollouts; healthy and failing mixed, both kinds present."""
    out = []
    for i in range(canaries):
        rollouts = []
        for j in range(each):
            healthy = rng.random() < 0.5 if (i + j) % 3 else bool(j % 2)
            breach = rng.randrange(len(BREACHES))
            rev = f"v{j}-{'ok' if healthy else 'bad'}"
            rollouts.append(Planned(f"c{i}", rev, healthy, breach))
        out.append(rollouts)
    return out


def config(
    tmp_path: Path,
    prom: PrometheusServer,
    url: str,
    jobs: list[str],
    threshold: int = 2,
    state_dir: Path | None = None,
) -> Path:
    """A daemon config: one canary per job, webhook router, alert notifier, outbox hooks."""
    hooks = [
        {"name": "events", "type": "event", "url": f"{url}/events", "timeout": "2s"},
        {"name": "post", "type": "post-rollout", "url": f"{url}/post", "timeout": "2s"},
    ]
    metrics = [
        {"name": "success-rate", "templateRef": {"name": "success"}, "thresholdRange": {"min": 99}},
        {"name": "latency", "templateRef": {"name": "latency"}, "thresholdRange": {"max": 500}},
    ]
    canaries = [
        {
            "name": f"c{i}",
            "namespace": NAMESPACE,
            "target": job,
            "router": "mesh",
            "provider": "prom",
            "analysis": {
                "interval": "0.3s",
                "threshold": threshold,
                "stepWeight": 25,
                "maxWeight": 50,
                "metrics": metrics,
                "webhooks": hooks,
            },
            "alerts": [{"name": "pager", "notifier": "pager"}],
        }
        for i, job in enumerate(jobs)
    ]
    return write_config(
        tmp_path,
        canaries,
        state=f"sqlite://{state_dir or tmp_path}/state.db",
        providers={"prom": {"type": "prometheus", "address": prom.url, "timeout": "2s"}},
        routers={"mesh": {"type": "webhook", "url": f"{url}/routes", "timeout": "2s"}},
        notifiers={"pager": {"type": "webhook", "url": f"{url}/alerts", "timeout": "2s"}},
        outbox={"initialBackoff": "0.1s", "maxBackoff": "1s", "pollInterval": "0.1s"},
        templates={
            "success": {"provider": "prom", "query": 'max(camp_success{job="{{ target }}"})'},
            "latency": {"provider": "prom", "query": 'max(camp_p99_ms{job="{{ target }}"})'},
        },
    )


# --------------------------------------------------------------------------- the daemon


class Daemon:
    """Starts, SIGKILLs and restarts ``canaryd run``; every incarnation logs to one file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config, self.log = config, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start a new incarnation."""
        env = {**os.environ, "CANARYD_LOG_FORMAT": "json"}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "canaryd", "run", "-c", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    async def kill(self) -> None:
        """SIGKILL the running incarnation and reap it."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await anyio.to_thread.run_sync(self.proc.wait, 10)

    async def stop(self) -> int:
        """SIGTERM (graceful stop) and return the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return await anyio.to_thread.run_sync(self.proc.wait, 30)

    def sighup(self) -> None:
        """Ask the running incarnation to reload its config."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def alive(self) -> bool:
        """Whether the current incarnation still runs."""
        return self.proc is not None and self.proc.poll() is None


@contextmanager
def read_only(db: Path) -> Iterator[sqlite3.Connection]:
    """A read-only connection to the state file (never checkpoints for the daemon)."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        yield conn
    finally:
        conn.close()


def stored_states(db: Path) -> dict[str, dict[str, Any]]:
    """Every canary's persisted state."""
    if not db.exists():
        return {}
    with read_only(db) as conn:
        return {k: json.loads(s) for k, s in conn.execute("SELECT key, state FROM canaries")}


# --------------------------------------------------------------------------- drivers


async def seed(prom: PrometheusServer, job: str, success: float, p99: float) -> None:
    """Set a canary's gauges and wait until Prometheus answers exactly these values."""
    assert prom.app is not None
    prom.app.set_many([("camp_success", {"job": job}, success), ("camp_p99_ms", {"job": job}, p99)])
    async with open_provider(prom.provider_config()) as provider:
        await eventually(
            lambda: provider.query(
                f'max(camp_success{{job="{job}"}}) * 100000 + max(camp_p99_ms{{job="{job}"}})',
                budget=2.0,
            ),
            lambda v: v is not None and abs(v - (success * 100000 + p99)) < 1e-6,
            within=15,
        )


async def drive(
    client: Client, prom: PrometheusServer, job: str, rollouts: list[Planned], ledger: Ledger
) -> None:
    """Run one canary's rollouts in order, each to its end, through kills and restarts."""
    for r in rollouts:
        success, p99, _ = BREACHES[r.breach] if not r.healthy else (*HEALTHY, "")
        await seed(prom, job, success, p99)
        key = f"{NAMESPACE}/{r.canary}"
        while True:  # GET first: a POST whose answer a kill swallowed may have started it
            state = await state_of(client, key)
            if state is not None and state["revision"] == r.revision:
                break
            with suppress(ClientError):
                await client.post(f"{key}/rollouts", {"revision": r.revision})
            await anyio.sleep(0.05)
        while True:
            state = await state_of(client, key)
            if state is not None and state["revision"] == r.revision:
                ledger.observe(state["rolloutId"], state["failedChecks"])
                if state["phase"] in TERMINAL:
                    ledger.verdicts[(r.canary, r.revision)] = state
                    break
            await anyio.sleep(0.1)


async def state_of(client: Client, key: str) -> dict[str, Any] | None:
    """The state of canary ``key`` from the API; None while the API does not know it."""
    try:
        state: dict[str, Any] = await client.get(key)
    except ClientError:
        return None
    return state


async def healthy(url: str, session: aiohttp.ClientSession) -> bool:
    """Whether the daemon's API answers ``/healthz``."""
    try:
        async with session.get(f"{url}/healthz", timeout=aiohttp.ClientTimeout(total=1)) as r:
            return r.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def wait_ready(url: str, session: aiohttp.ClientSession, within: float = 30.0) -> None:
    """Wait (bounded) until a freshly started daemon answers ``/healthz``."""
    deadline = time.monotonic() + within
    while not await healthy(url, session):
        assert time.monotonic() < deadline, f"the daemon did not come up within {within:g}s"
        await anyio.sleep(0.05)


async def drain(url: str, db: Path, settled: str = "'sent'") -> None:
    """Wait (bounded) until the last incarnation is up, the outbox sent and every canary idle.

    ``settled``: the SQL list of outbox statuses that count as done.
    """
    deadline = time.monotonic() + 60
    async with aiohttp.ClientSession() as session:
        await wait_ready(url, session)
    while time.monotonic() < deadline:
        with read_only(db) as conn:
            pending = conn.execute(
                f"SELECT COUNT(*) FROM outbox WHERE status NOT IN ({settled})"
            ).fetchone()
        states = stored_states(db)
        if pending[0] == 0 and all(s["phase"] in TERMINAL for s in states.values()):
            return
        await anyio.sleep(0.2)
    raise AssertionError("the outbox did not drain within 60s after the last kill")
