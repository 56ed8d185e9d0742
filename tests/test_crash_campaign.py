"""Crash campaign: a real daemon drives many rollouts while it is SIGKILLed at random moments.

One ``canaryd run`` subprocess analyses several canaries, each judged on its
own gauges in the session's real Prometheus, routed through a webhook router
and alerting through the persistent outbox (a ``webhook`` notifier, ``event``
webhooks and ``post-rollout`` webhooks), all received by real local HTTP
receivers. Per canary, a driver starts rollouts one after the other, healthy
or failing as a seeded plan says, while a killer SIGKILLs the daemon at random
moments (during start-up, mid-tick, mid-delivery) and starts it again.

At the end it checks what canaryd promises (``docs/reliability.md``): every
rollout ended with the right verdict, the router saw exactly the routes of that
verdict, every outbox message arrived at least once and never twice under
different idempotency keys, failedChecks never decreased within a rollout, and
the state file passes ``PRAGMA integrity_check``. The figures are printed and
written to JSON (``CANARYD_CAMPAIGN_REPORT`` or the test's tmp dir).

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
from collections.abc import Callable, Collection, Coroutine, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml
from aiohttp import web
from daemons import TOKEN, api_url, wait_for_state, write_config
from disks import small_tmpfs
from faults import DedupRouter, StandIn
from prom import PrometheusServer, open_provider
from receiver import Receiver, Request
from support import eventually, free_port

from canaryd.client import Client
from canaryd.errors import ClientError

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]

LONG = os.environ.get("CANARYD_CAMPAIGN") == "long"
SEED = int(os.environ.get("CANARYD_CAMPAIGN_SEED", "20240808"))
NAMESPACE = "campaign"
TERMINAL = ("Succeeded", "Failed")
HEALTHY = (99.9, 120.0)
BREACHES = ((80.0, 120.0, "success-rate 80 < min 99"), (99.9, 900.0, "latency 900 > max 500"))
EARLY_KILLS = 0.3
"""Share of the kills aimed at start-up, before the API answers."""
EARLY_KILL_AFTER = (0.05, 1.5)
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


def quick_check(db: Path) -> str:
    """``PRAGMA quick_check`` of the state file."""
    with read_only(db) as conn:
        return str(conn.execute("PRAGMA quick_check").fetchone()[0])


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
            state = await _get(client, key)
            if state is not None and state["revision"] == r.revision:
                break
            with suppress(ClientError):
                await client.post(f"{key}/rollouts", {"revision": r.revision})
            await anyio.sleep(0.05)
        while True:
            state = await _get(client, key)
            if state is not None and state["revision"] == r.revision:
                ledger.observe(state["rolloutId"], state["failedChecks"])
                if state["phase"] in TERMINAL:
                    ledger.verdicts[(r.canary, r.revision)] = state
                    break
            await anyio.sleep(0.1)


async def _get(client: Client, key: str) -> dict[str, Any] | None:
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


async def kill_loop(
    daemon: Daemon, url: str, db: Path, rng: random.Random, ledger: Ledger, done: anyio.Event
) -> None:
    """SIGKILL the daemon at random moments until the rollouts are done and enough kills ran.

    About a third of the kills land during start-up (imports, store, first tick); the
    others come a random moment after the API answered, in the middle of the work.
    """
    async with aiohttp.ClientSession() as session:
        while not (done.is_set() and ledger.kills >= PROFILE.min_kills):
            daemon.start()
            ledger.starts += 1
            if rng.random() < EARLY_KILLS:
                await anyio.sleep(rng.uniform(*EARLY_KILL_AFTER))
                ready = await healthy(url, session)
            else:
                await wait_ready(url, session)
                ready = True
                await anyio.sleep(rng.uniform(*PROFILE.kill_after))
            await daemon.kill()
            ledger.kills += 1
            ledger.kills_before_ready += not ready
            if db.exists():  # noqa: ASYNC240 (a stat, between two kills)
                for state in stored_states(db).values():
                    ledger.observe(state.get("rollout_id"), state.get("failed_checks", 0))
                assert quick_check(db) == "ok", f"state file damaged after kill {ledger.kills}"
                ledger.quick_checks += 1
        daemon.start()
        ledger.starts += 1
        await wait_ready(url, session)


# --------------------------------------------------------------------------- invariants


def _strip(value: Any) -> Any:
    """A payload without its timestamps: what identifies a message's content."""
    if isinstance(value, dict):
        return {k: _strip(v) for k, v in value.items() if k not in ("time", "timestamp")}
    if isinstance(value, list):
        return [_strip(v) for v in value]
    return value


def identity(request: Request) -> str:
    """A message's content identity: path plus payload without timestamps."""
    return request.path + " " + json.dumps(_strip(request.json), sort_keys=True)


def keys_by_identity(requests: list[Request]) -> dict[str, set[str]]:
    """Content identity -> the idempotency keys it arrived under."""
    out: dict[str, set[str]] = defaultdict(set)
    for r in requests:
        out[identity(r)].add(r.headers["Idempotency-Key"])
    return out


def expected_routes(healthy: bool) -> list[tuple[str, int, int]]:
    """The router calls of one rollout (first arrival order, retries folded)."""
    if healthy:
        return [("route", 75, 25), ("route", 50, 50), ("promote", 50, 50), ("route", 100, 0)]
    return [("route", 75, 25), ("rollback", 100, 0)]


def routes_of(requests: list[Request], canary: str, revision: str) -> list[tuple[str, int, int]]:
    """Distinct router calls of one rollout, in the order they first arrived."""
    seen: list[tuple[str, int, int]] = []
    for r in requests:
        b = r.json
        if r.path == "/routes" and b["canary"] == canary and b["revision"] == revision:
            call = (b["action"], b["primaryWeight"], b["canaryWeight"])
            if call not in seen:
                seen.append(call)
    return seen


def outbox_rows(db: Path) -> list[tuple[str, str, str]]:
    """(idempotency key, target, status) of every outbox row."""
    with read_only(db) as conn:
        return [tuple(row) for row in conn.execute("SELECT idem, target, status FROM outbox")]


def check_verdicts(planned: list[Planned], ledger: Ledger) -> None:
    """Healthy rollouts Succeeded; failing ones Failed at threshold for their breach."""
    wrong = []
    for p in planned:
        state = ledger.verdicts[(p.canary, p.revision)]
        want = ("Succeeded", None, 0) if p.healthy else ("Failed", BREACHES[p.breach][2], 2)
        got = (state["phase"], state["reason"], state["failedChecks"])
        weights = (state["canaryWeight"], state["primaryWeight"])
        if (got[0], weights) != (want[0], (0, 100)) or (not p.healthy and got != want):
            wrong.append((p, got, weights))
    assert not wrong, f"wrong verdicts: {wrong}"


def check_routes(planned: list[Planned], requests: list[Request]) -> None:
    """The router saw each rollout's routes in order, and ended every canary on the primary."""
    canaries = sorted({p.canary for p in planned})
    misrouted = {
        (p.canary, p.revision): got
        for p in planned
        if (got := routes_of(requests, f"{NAMESPACE}/{p.canary}", p.revision))
        != expected_routes(p.healthy)
    }
    assert not misrouted, f"router calls do not match the verdicts: {misrouted}"
    for canary in canaries:
        calls = [r.json for r in requests if r.path == "/routes"]
        last = [b for b in calls if b["canary"] == f"{NAMESPACE}/{canary}"][-1]
        assert (last["primaryWeight"], last["canaryWeight"]) == (100, 0), last


def dead_for_removal(db: Path) -> dict[str, tuple[str, str]]:
    """Dead letters of canaries a reload removed: key -> (canary, revision)."""
    with read_only(db) as conn:
        rows = conn.execute(
            "SELECT idem, key, payload FROM outbox WHERE status='dead' "
            "AND last_error LIKE '%is no longer configured%'"
        ).fetchall()
    return {idem: (key.split("/")[1], json.loads(p).get("revision")) for idem, key, p in rows}


def check_delivery(
    requests: list[Request], db: Path, excused: Collection[str] = ()
) -> list[tuple[str, str, str]]:
    """Keys and contents match one to one; every outbox row was sent and received, no other.

    ``excused``: keys of rows that may be dead instead (their canary was removed).
    """
    doubled = {k: v for k, v in keys_by_identity(requests).items() if len(v) > 1}
    assert not doubled, f"same message under different idempotency keys: {doubled}"
    contents: dict[str, set[str]] = defaultdict(set)
    for r in requests:
        contents[r.headers["Idempotency-Key"]].add(identity(r))
    reused = {k: v for k, v in contents.items() if len(v) > 1}
    assert not reused, f"one idempotency key for different messages: {reused}"
    rows = outbox_rows(db)
    received = {r.headers["Idempotency-Key"] for r in requests if r.path != "/routes"}
    lost = [row for row in rows if row[0] not in received and row[0] not in excused]
    undelivered = [row for row in rows if row[2] != "sent" and row[0] not in excused]
    phantom = received - {row[0] for row in rows}
    assert not lost, f"outbox messages never received: {lost[:10]}"
    assert not undelivered, f"outbox messages not marked sent: {undelivered[:10]}"
    assert not phantom, f"received messages the outbox never held: {sorted(phantom)[:10]}"
    return rows


def check_messages_per_rollout(
    planned: list[Planned], requests: list[Request], excused: Collection[tuple[str, str]] = ()
) -> None:
    """Each rollout alerted its start and its end, and ran its post-rollout hook.

    ``excused``: rollouts (canary, revision) some of whose messages died with their
    canary's removal.
    """
    seen: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in requests:
        body = r.json
        if r.path == "/alerts":
            seen[(body["name"], body["revision"])].add(body["event"])
        elif r.path == "/post":
            seen[(body["name"], body["revision"])].add(f"post:{body['phase']}")
    missing = {}
    for p in planned:
        end = (
            ("rollout.promoted", "post:Succeeded")
            if p.healthy
            else ("rollout.rolled_back", "post:Failed")
        )
        if (p.canary, p.revision) in excused:
            continue
        if not {"rollout.started", *end} <= seen[(p.canary, p.revision)]:
            missing[(p.canary, p.revision)] = seen[(p.canary, p.revision)]
    assert not missing, f"rollouts without their alerts or post-rollout hook: {missing}"


def check_invariants(
    planned: list[Planned],
    ledger: Ledger,
    requests: list[Request],
    db: Path,
    *,
    removals: bool = False,
) -> dict[str, Any]:
    """Assert every promise of the campaign; return the figures.

    With ``removals`` (reloads removed canaries), messages a removed canary's
    dispatcher dead-lettered as "no longer configured" are excused (counted).
    """
    dead = dead_for_removal(db) if removals else {}
    check_verdicts(planned, ledger)
    check_routes(planned, requests)
    rows = check_delivery(requests, db, dead.keys())
    check_messages_per_rollout(planned, requests, set(dead.values()))
    decreased = {rid: seq for rid, seq in ledger.failed_checks.items() if seq != sorted(seq)}
    assert not decreased, f"failedChecks decreased within a rollout: {decreased}"
    with read_only(db) as conn:
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    assert integrity == "ok", integrity

    routes = [r for r in requests if r.path == "/routes"]
    outbox = [r for r in requests if r.path != "/routes"]
    return {
        "rollouts": len(planned),
        "rollouts_succeeded": sum(p.healthy for p in planned),
        "rollouts_failed": sum(not p.healthy for p in planned),
        "wrong_verdicts": 0,
        "router_calls": len(routes),
        "router_calls_repeated_same_key": len(routes)
        - len({r.headers["Idempotency-Key"] for r in routes}),
        "messages_in_outbox": len(rows),
        "messages_delivered": len({r.headers["Idempotency-Key"] for r in outbox}),
        "deliveries": len(outbox),
        "redeliveries_same_key": len(outbox) - len({r.headers["Idempotency-Key"] for r in outbox}),
        "duplicates_under_other_keys": 0,
        "messages_lost": 0,
        **({"dead_letters_of_removed_canaries": len(dead)} if removals else {}),
        "failed_checks_decreased": 0,
        "integrity_check": integrity,
    }


# --------------------------------------------------------------------------- the campaign


@pytest.mark.timeout(PROFILE.deadline + 120)
async def test_sigkill_campaign_keeps_every_promise(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    """Rollouts driven through random SIGKILLs end right, route right, and lose no message."""
    print(f"crash campaign seed={SEED} long={LONG} (replay: CANARYD_CAMPAIGN_SEED={SEED})")
    rng = random.Random(SEED)
    per_canary = plan(rng)
    planned = [r for rollouts in per_canary for r in rollouts]
    jobs = [f"campaign-{SEED}-{free_port()}-{i}" for i in range(PROFILE.canaries)]
    ledger = Ledger()
    started = time.monotonic()
    async with Receiver(delay=RECEIVER_DELAY) as receiver:
        cfg = config(tmp_path, prometheus, receiver.url, jobs)
        url, db = api_url(cfg), tmp_path / "state.db"
        daemon = Daemon(cfg, tmp_path / "daemon.log")
        done = anyio.Event()
        try:
            with anyio.fail_after(PROFILE.deadline):
                async with Client(url, TOKEN, timeout=3.0) as client:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(
                            kill_loop, daemon, url, db, random.Random(SEED + 1), ledger, done
                        )

                        async def all_drivers() -> None:
                            async with anyio.create_task_group() as drivers:
                                for job, rollouts in zip(jobs, per_canary, strict=True):
                                    drivers.start_soon(
                                        drive, client, prometheus, job, rollouts, ledger
                                    )
                            done.set()

                        tg.start_soon(all_drivers)
                    await drain(url, db)
                    assert await daemon.stop() == 0, "the last incarnation did not stop cleanly"
        except BaseException:
            print(f"campaign failed; seed={SEED}; log: {daemon.log}; kills={ledger.kills}")
            raise
        finally:
            if daemon.alive():
                await daemon.kill()
        figures = check_invariants(planned, ledger, list(receiver.requests), db)
    figures = {
        "seed": SEED,
        "profile": "long" if LONG else "ci",
        "canaries": PROFILE.canaries,
        "kills": ledger.kills,
        "kills_before_ready": ledger.kills_before_ready,
        "daemon_starts": ledger.starts,
        "quick_checks_after_kill": ledger.quick_checks,
        **figures,
        "seconds": round(time.monotonic() - started, 1),
    }
    report = Path(os.environ.get("CANARYD_CAMPAIGN_REPORT", tmp_path / "campaign.json"))
    await anyio.Path(report).write_text(json.dumps(figures, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    assert ledger.kills >= PROFILE.min_kills
    assert len(planned) >= 20


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


# --------------------------------------------------------------------------- one crash, aimed


async def test_decision_remade_after_sigkill_never_reuses_the_routed_key(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """A router that dedupes by key still gets the rollback re-decided after a SIGKILL."""
    async with StandIn() as server:
        router = DedupRouter(server)
        router.hold = lambda body: body["canaryWeight"] == 50  # applied, answer never comes
        cfg = config(tmp_path, prometheus, server.url, [unique_job], threshold=1)
        key = f"{NAMESPACE}/c0"
        daemon = Daemon(cfg, tmp_path / "daemon.log")
        await seed(prometheus, unique_job, *HEALTHY)
        try:
            async with (
                Client(api_url(cfg), TOKEN, timeout=3.0) as client,
                aiohttp.ClientSession() as s,
            ):
                daemon.start()
                await wait_ready(api_url(cfg), s)
                await client.post(f"{key}/rollouts", {"revision": "v2"})
                with anyio.fail_after(20):
                    await router.held.wait()
                await daemon.kill()  # the router moved to 50; canaryd never recorded it
                await seed(prometheus, unique_job, *BREACHES[0][:2])
                daemon.start()
                await wait_ready(api_url(cfg), s)
                state = await wait_for_state(client, key, lambda s: s["phase"] == "Failed", 20)
                assert await daemon.stop() == 0
        finally:
            if daemon.alive():
                await daemon.kill()
    assert (state["canaryWeight"], state["primaryWeight"]) == (0, 100)
    assert router.applied[key] == (100, 0), f"router left at {router.applied[key]}"
    assert not router.conflicts, f"one idempotency key for two decisions: {router.conflicts}"


# --------------------------------------------------------------------------- full disk, reload race

PHASE_CANARIES, PHASE_ROLLOUTS = (4, 6) if LONG else (3, 4)
"""Canaries and rollouts per canary of the full-disk and reload-race phases."""

PHASE_DEADLINE = 300 if LONG else 150
"""Seconds one phase may take before it fails."""

Disturb = Callable[[Daemon, Path, random.Random, Ledger, anyio.Event], Coroutine[Any, Any, None]]


class WatchingReceiver(Receiver):
    """A receiver that, as each route towards the canary arrives, reads the recorded state.

    Attributes:
        ahead: routes that arrived while the state file did not yet record their weights.
    """

    def __init__(self, db: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.db = db
        self.ahead: list[tuple[dict[str, Any], dict[str, Any] | None]] = []

    async def _handle(self, request: web.Request) -> web.Response:
        if request.path == "/routes":
            body = json.loads(await request.read())
            if body["action"] != "rollback":
                states = await anyio.to_thread.run_sync(stored_states, self.db)
                st = states.get(body["canary"])
                recorded = st and (st["revision"], st["primary_weight"], st["canary_weight"])
                if recorded != (body["revision"], body["primaryWeight"], body["canaryWeight"]):
                    self.ahead.append((body, st))
        return await super()._handle(request)


async def run_phase(
    name: str,
    seed: int,
    tmp_path: Path,
    prometheus: PrometheusServer,
    disturb: Disturb,
    state_dir: Path | None = None,
    *,
    removals: bool = False,
) -> dict[str, Any]:
    """Drive a seeded plan of rollouts through one daemon while ``disturb`` runs; check it all.

    Returns:
        The figures (also printed, with the seed).
    """
    print(f"crash campaign phase={name} seed={seed} (replay: CANARYD_CAMPAIGN_SEED={SEED})")
    per_canary = plan(random.Random(seed), PHASE_CANARIES, PHASE_ROLLOUTS)
    planned = [r for rollouts in per_canary for r in rollouts]
    jobs = [f"campaign-{name}-{seed}-{free_port()}-{i}" for i in range(PHASE_CANARIES)]
    ledger, started = Ledger(), time.monotonic()
    db = (state_dir or tmp_path) / "state.db"
    receiver = WatchingReceiver(db, delay=RECEIVER_DELAY)
    async with receiver:
        cfg = config(tmp_path, prometheus, receiver.url, jobs, state_dir=state_dir)
        url = api_url(cfg)
        daemon = Daemon(cfg, tmp_path / "daemon.log")
        done = anyio.Event()
        try:
            daemon.start()
            ledger.starts += 1
            with anyio.fail_after(PHASE_DEADLINE):
                async with aiohttp.ClientSession() as session:
                    await wait_ready(url, session)
                async with Client(url, TOKEN, timeout=3.0) as client:
                    async with anyio.create_task_group() as tg:
                        tg.start_soon(disturb, daemon, cfg, random.Random(seed + 1), ledger, done)
                        async with anyio.create_task_group() as drivers:
                            for job, rollouts in zip(jobs, per_canary, strict=True):
                                drivers.start_soon(drive, client, prometheus, job, rollouts, ledger)
                        done.set()
                    assert daemon.alive(), f"the daemon died during the {name} phase"
                    await drain(url, db, "'sent', 'dead'" if removals else "'sent'")
                    assert await daemon.stop() == 0, "the daemon did not stop cleanly"
        except BaseException:
            print(f"phase {name} failed; seed={seed}; log: {daemon.log}; faults={ledger.faults}")
            raise
        finally:
            if daemon.alive():
                await daemon.kill()
        figures = check_invariants(planned, ledger, list(receiver.requests), db, removals=removals)
    assert not receiver.ahead, f"routes sent before their state was recorded: {receiver.ahead}"
    figures = {
        "phase": name,
        "seed": seed,
        "canaries": PHASE_CANARIES,
        "faults": ledger.faults,
        "routes_ahead_of_the_record": 0,
        **figures,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(json.dumps(figures, indent=2))
    return figures


@pytest.mark.timeout(PHASE_DEADLINE + 120)
async def test_full_disk_phase_hides_no_failure_and_moves_no_traffic_ahead(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    """Rollouts driven while the state filesystem is filled to its last byte and freed again,
    at seeded moments, still end right, route exactly their verdict's routes, lose no message."""

    async def fill_and_free(
        daemon: Daemon, cfg: Path, rng: random.Random, ledger: Ledger, done: anyio.Event
    ) -> None:
        try:
            while not done.is_set():
                await anyio.sleep(rng.uniform(0.2, 1.2))
                await anyio.to_thread.run_sync(disk.fill)
                ledger.faults += 1
                await anyio.sleep(rng.uniform(0.3, 1.5))
                disk.free()
        finally:
            disk.free()

    with small_tmpfs(tmp_path, "16m") as disk:
        figures = await run_phase(
            "full-disk", SEED + 100, tmp_path, prometheus, fill_and_free, state_dir=disk.path
        )
    assert figures["faults"] >= 3, "the disk was hardly ever full"


@pytest.mark.timeout(PHASE_DEADLINE + 120)
async def test_reload_race_phase_never_resumes_from_stale_state(
    tmp_path: Path, prometheus: PrometheusServer
) -> None:
    """Rollouts driven while SIGHUPs remove canaries and add them back, at seeded moments (ticks
    in flight included), still end right and route exactly their verdict's routes."""

    async def remove_and_add(
        daemon: Daemon, cfg: Path, rng: random.Random, ledger: Ledger, done: anyio.Event
    ) -> None:
        full = await anyio.Path(cfg).read_text()
        everything = yaml.safe_load(full)
        async with Client(api_url(cfg), TOKEN, timeout=3.0) as client:
            while not done.is_set():
                await anyio.sleep(rng.uniform(0.05, 0.8))
                names = [c["name"] for c in everything["canaries"]]
                gone = set(rng.sample(names, rng.randint(1, len(names))))
                kept = {
                    **everything,
                    "canaries": [c for c in everything["canaries"] if c["name"] not in gone],
                }
                await anyio.Path(cfg).write_text(yaml.safe_dump(kept, sort_keys=False))
                daemon.sighup()
                await _until(client, f"{NAMESPACE}/{min(gone)}", present=False)
                await anyio.sleep(rng.uniform(0.0, 0.3))
                await anyio.Path(cfg).write_text(full)
                daemon.sighup()
                await _until(client, f"{NAMESPACE}/{min(gone)}", present=True)
                ledger.faults += 1

    figures = await run_phase(
        "reload-race", SEED + 200, tmp_path, prometheus, remove_and_add, removals=True
    )
    assert figures["faults"] >= 3, "hardly any reloads"


async def _until(client: Client, key: str, *, present: bool, within: float = 10.0) -> None:
    """Wait (bounded) until the API knows ``key`` (or no longer does)."""
    deadline = time.monotonic() + within
    while (await _get(client, key) is not None) != present:
        assert time.monotonic() < deadline, f"reload not applied within {within:g}s ({key})"
        await anyio.sleep(0.02)
