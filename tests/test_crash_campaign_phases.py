"""Crash campaign phases: rollouts driven through a filling disk and through reload races."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
import yaml
from aiohttp import web
from campaign import (
    LONG,
    NAMESPACE,
    RECEIVER_DELAY,
    SEED,
    Daemon,
    Ledger,
    config,
    drain,
    drive,
    plan,
    state_of,
    stored_states,
    wait_ready,
)
from campaign_checks import check_invariants
from daemons import TOKEN, api_url
from disks import small_tmpfs
from prom import PrometheusServer
from receiver import Receiver
from support import free_port

from canaryd.client import Client

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]


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
    while (await state_of(client, key) is not None) != present:
        assert time.monotonic() < deadline, f"reload not applied within {within:g}s ({key})"
        await anyio.sleep(0.02)
