"""Reloads and restarts that must not lose a rollback the router has not applied yet.

Real ``canaryd run`` processes, a webhook router stand-in over HTTP and real
signals (SIGHUP, SIGKILL). See docs/reliability.md ("A canary removed with a
rollback pending").
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemons import client_for, daemon_process, wait_for_state
from prom import eventually
from service_helpers import backends, canary, prom_answer, service_config

pytestmark = pytest.mark.anyio


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
