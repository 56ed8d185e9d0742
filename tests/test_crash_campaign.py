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
import time
from pathlib import Path

import aiohttp
import anyio
import pytest
from campaign import (
    BREACHES,
    HEALTHY,
    LONG,
    NAMESPACE,
    PROFILE,
    RECEIVER_DELAY,
    SEED,
    Daemon,
    Ledger,
    config,
    drain,
    drive,
    healthy,
    plan,
    read_only,
    seed,
    stored_states,
    wait_ready,
)
from campaign_checks import check_invariants
from daemons import TOKEN, api_url, wait_for_state
from faults import DedupRouter, StandIn
from prom import PrometheusServer
from receiver import Receiver
from support import free_port

from canaryd.client import Client

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.slow]


EARLY_KILLS = 0.3
"""Share of the kills aimed at start-up, before the API answers."""
EARLY_KILL_AFTER = (0.05, 1.5)


def quick_check(db: Path) -> str:
    """``PRAGMA quick_check`` of the state file."""
    with read_only(db) as conn:
        return str(conn.execute("PRAGMA quick_check").fetchone()[0])


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
