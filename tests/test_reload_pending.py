"""Reloads and restarts that must not lose a rollback.

Real ``canaryd run`` processes, a webhook router stand-in over HTTP, real
signals (SIGHUP, SIGKILL) and a really full tmpfs. See docs/reliability.md ("A
canary removed with a rollback pending", "A rollback the store never recorded").
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import anyio
import pytest
import yaml
from daemons import client_for, daemon_process, wait_for_state
from disks import small_tmpfs
from service_helpers import backends, canary, prom_answer, service_config
from support import eventually
from test_signals import running, start_rollout

from canaryd.core.analysis import Phase
from canaryd.errors import ClientError

pytestmark = [pytest.mark.anyio, pytest.mark.slow]  # real daemon processes

KEY = "prod/web"


def _set_canaries(config: Path, canaries: list[dict[str, Any]]) -> None:
    data = yaml.safe_load(config.read_text())
    data["canaries"] = canaries
    config.write_text(yaml.safe_dump(data, sort_keys=False))


async def test_a_canary_removed_with_its_rollback_pending_is_still_rolled_back(
    tmp_path: Path,
) -> None:
    """A SIGHUP removing a canary whose rollback the router refused keeps retrying that
    rollback until the router applies it."""
    other = canary("other", interval="1h")
    async with backends() as (prom, router):
        cfg = service_config(tmp_path, prom, router, [canary(interval="300ms"), other])
        log = tmp_path / "daemon.log"
        async with client_for(cfg) as client:
            with daemon_process(cfg, log) as proc:
                await eventually(lambda: client.get(""), lambda v: True, within=20)
                await client.post("prod/web/rollouts", {"revision": "v2"})
                await wait_for_state(client, "prod/web", lambda s: s["canaryWeight"] >= 10)
                router.statuses = [500]  # every route from now on is refused
                prom.body = prom_answer(1.0)  # the checks fail: a rollback comes
                await wait_for_state(client, "prod/web", lambda s: bool(s.get("routePending")))
                _set_canaries(cfg, [other])
                proc.send_signal(signal.SIGHUP)
                await wait_for_state(client, "", lambda s: "prod/web" not in json.dumps(s))
                refused = len(router.requests)
                router.statuses = [500] * refused + [200]  # the router is back
                sent = await router.wait_for(refused + 1)
                rollback = sent[refused].json
                assert rollback["action"] == "rollback", rollback
                assert rollback["canaryWeight"] == 0, rollback
                assert proc.poll() is None
    assert "reload.rollback_pending" in log.read_text()


@pytest.mark.parametrize("frees", [True, False], ids=["disk-freed", "disk-still-full"])
async def test_an_abort_on_a_full_disk_survives_kill_9(tmp_path: Path, frees: bool) -> None:
    """An abort that rolled traffic back but could not be recorded (really full disk) is not
    undone by kill -9: the restarted daemon (disk freed or still full) never routes towards
    the canary again."""
    with small_tmpfs(tmp_path, "16m") as disk:
        async with backends() as (prom, router):
            spec = canary(interval="2s", stepWeight=25, maxWeight=75)
            cfg = service_config(
                tmp_path, prom, router, [spec], state=f"sqlite://{disk.path}/state.db"
            )
            log = tmp_path / "daemon.log"
            async with client_for(cfg) as client:
                with daemon_process(cfg, log):
                    await eventually(lambda: client.get(""), lambda v: True, within=20)
                    await client.post("prod/web/rollouts", {"revision": "v2"})
                    await wait_for_state(client, "prod/web", lambda s: s["canaryWeight"] == 25)
                    disk.fill()
                    with pytest.raises(ClientError, match="not yet recorded"):
                        await client.post("prod/web/abort", {})
                    aborted = len(router.requests)
                    assert router.requests[-1].json["action"] == "rollback"
                # kill -9 while the disk is full; canaryd starts again (the disk freed, or not)
                if frees:
                    disk.free()
                with daemon_process(cfg, log):
                    await eventually(lambda: client.get(""), lambda v: True, within=20)
                    await wait_for_state(
                        client, "prod/web", lambda s: s["phase"] != "Progressing", within=15
                    )
                    await anyio.sleep(5)  # two more intervals: nothing moves forward
                    state = await client.get("prod/web")
    after = [r.json for r in router.requests[aborted:]]
    assert all(r["canaryWeight"] == 0 for r in after), after
    assert state["phase"] == "Failed", state
    assert state["canaryWeight"] == 0, state
    assert "rollback.unrecorded_resent" in log.read_text()


@pytest.mark.parametrize("added_back", [False, True], ids=["stays-removed", "added-back"])
async def test_a_removed_canary_stops_ticking_once_its_pending_rollback_is_applied(
    tmp_path: Path, added_back: bool
) -> None:
    """The loop of a canary removed with its rollback pending stops once the router applied
    it; added back meanwhile, the canary continues from that loop, rollback still pending."""
    other = canary("other", interval="1h")
    async with running(tmp_path, [canary(interval="200ms"), other]) as r:
        await start_rollout(r)
        r.router.statuses = [500]
        r.prom.body = prom_answer(1.0)
        await eventually(lambda: r.state().route_pending, within=15, what="rollback pending")
        old = r.daemon.runner(KEY)
        r.rewrite(lambda data: data.update(canaries=[other]))
        assert await r.daemon.reload()
        if added_back:
            r.rewrite(lambda data: data.update(canaries=[canary(interval="200ms"), other]))
            assert await r.daemon.reload()
            await eventually(lambda: r.state().route_pending, what="the rollback taken over")
        r.router.statuses = [500] * len(r.router.requests) + [200]
        await r.router.wait_for(len(r.router.statuses))
        gone = KEY not in r.daemon.runners
        await eventually(
            lambda: KEY not in r.daemon.supervisor.removed, what="the removed loop let go"
        )
        assert old is not None
        await eventually(lambda: old.settled, what="the removed loop idle, owing nothing")
        if added_back:
            await eventually(lambda: not r.state().route_pending, what="the rollback applied")
            assert r.state().phase is Phase.FAILED and r.state().canary_weight == 0
        else:
            assert gone and not r.daemon.scheduler.remove(KEY)  # no longer scheduled
            stored = (await r.daemon.services.store.load_states())[KEY]
            assert stored.phase is Phase.FAILED and not stored.route_pending, stored
