"""SIGHUP reloads and SIGTERM stops a real in-process daemon, with a rollout in progress."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
import yaml
from daemons import TOKEN, write_config
from receiver import Receiver
from service_helpers import backends, canary, service_config
from support import eventually

from canaryd.cli.commands import check
from canaryd.config.loader import load_config
from canaryd.core.analysis import CanaryState, Phase
from canaryd.service.daemon import Daemon
from canaryd.service.store import SqliteStore

pytestmark = pytest.mark.anyio

SLOW: dict[str, Any] = {"stepWeight": 1, "maxWeight": 99, "threshold": 50}
"""A rollout that stays in progress for the whole test (one step per 100ms tick)."""


@dataclass
class Running:
    """An in-process daemon, its config file and its stand-in servers."""

    daemon: Daemon
    config: Path
    prom: Receiver
    router: Receiver
    finished: anyio.Event

    def state(self, key: str = "prod/web") -> CanaryState:
        """The in-memory state of a canary."""
        runner = self.daemon.runner(key)
        assert runner is not None, f"no runner for {key}"
        return runner.state

    def rewrite(self, edit: Callable[[dict[str, Any]], None]) -> None:
        """Change the config file in place."""
        data = yaml.safe_load(self.config.read_text())
        edit(data)
        self.config.write_text(yaml.safe_dump(data, sort_keys=False))

    def sighup(self) -> None:
        """Send SIGHUP to this process (the daemon's signal receiver is installed)."""
        os.kill(os.getpid(), signal.SIGHUP)


@asynccontextmanager
async def running(
    tmp_path: Path, canaries: list[dict[str, Any]], *, prom_delay: float = 0.0, **daemon: Any
) -> AsyncIterator[Running]:
    """Run a daemon (signals handled) until the block ends; cancel it if still running."""
    async with backends() as (prom, router):
        prom.delay = prom_delay
        config = service_config(tmp_path, prom, router, canaries)
        d = Daemon(config, load_config(config), **daemon)
        finished = anyio.Event()

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            await d.run(task_status=task_status)
            finished.set()

        async with anyio.create_task_group() as tg:
            with anyio.fail_after(15):
                await tg.start(run)
            try:
                yield Running(d, config, prom, router, finished)
            finally:
                tg.cancel_scope.cancel()


async def start_rollout(r: Running, key: str = "prod/web", revision: str = "v2") -> CanaryState:
    """Start a rollout through the runner and wait until it moved some traffic."""
    runner = r.daemon.runner(key)
    assert runner is not None
    await runner.start_rollout(revision, {})
    await eventually(lambda: r.state(key).canary_weight >= 2, what="traffic on the canary")
    return r.state(key)


# --------------------------------------------------------------------------- SIGHUP


async def test_sighup_adds_a_canary_without_disturbing_the_rollout(tmp_path: Path) -> None:
    """A canary added to the file starts; the rollout in progress keeps its id and weight."""
    async with running(tmp_path, [canary(**SLOW)]) as r:
        before = await start_rollout(r)
        r.rewrite(lambda c: c["canaries"].append(canary("api", **SLOW)))
        r.sighup()
        await eventually(lambda: r.daemon.runner("prod/api") is not None, what="new runner")
        after = r.state()
        assert (after.rollout_id, after.phase) == (before.rollout_id, Phase.PROGRESSING)
        assert after.canary_weight >= before.canary_weight
        assert r.state("prod/api").phase is Phase.INITIALIZED


async def test_sighup_removes_a_canary_and_keeps_its_state(tmp_path: Path) -> None:
    """A removed canary stops ticking; its rollout is in the store and resumes when re-added."""
    async with running(tmp_path, [canary(**SLOW), canary("api", **SLOW)]) as r:
        await start_rollout(r)
        r.rewrite(lambda c: c.update(canaries=[canary("api", **SLOW)]))
        r.sighup()
        await eventually(lambda: r.daemon.runner("prod/web") is None, what="runner removed")
        stored = (await r.daemon.services.store.load_states())["prod/web"]
        assert stored.phase is Phase.PROGRESSING and stored.canary_weight >= 2
        r.rewrite(lambda c: c["canaries"].append(canary(**SLOW)))
        r.sighup()
        await eventually(lambda: r.daemon.runner("prod/web") is not None, what="runner back")
        again = r.state()
        assert (again.rollout_id, again.phase) == (stored.rollout_id, Phase.PROGRESSING)
        assert again.canary_weight >= stored.canary_weight


async def test_sighup_change_applies_at_the_next_tick(tmp_path: Path) -> None:
    """A changed bound is used from the next tick on; the rollout keeps its id and weight."""
    async with running(tmp_path, [canary(**SLOW)]) as r:
        before = await start_rollout(r)
        assert before.failed_checks == 0
        r.rewrite(lambda c: c.update(canaries=[canary(minimum=99.95, **SLOW)]))
        r.sighup()
        await eventually(lambda: r.state().failed_checks >= 2, what="checks failing on 99.95")
        after = r.state()
        assert after.rollout_id == before.rollout_id
        assert after.phase is Phase.PROGRESSING
        assert after.canary_weight >= before.canary_weight
        runner = r.daemon.runner("prod/web")
        assert runner is not None and runner.spec.analysis.metrics[0].thresholdRange is not None
        assert runner.spec.analysis.metrics[0].thresholdRange.min == 99.95


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["canaries"][0].update(router="nope"),
        lambda c: c["canaries"][0]["analysis"].update(stepWeight="ten"),
        lambda c: c.update(api={"token_file": "/nonexistent/token"}),
    ],
    ids=["unknown-router", "bad-type", "missing-token-file"],
)
async def test_sighup_rejects_an_invalid_config_and_keeps_running(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], breakage: Callable[[dict[str, Any]], None]
) -> None:
    """An invalid config is logged with `canaryd check`'s messages; the last good one stays."""
    async with running(tmp_path, [canary(**SLOW)]) as r:
        before = await start_rollout(r)
        r.rewrite(breakage)
        assert check(r.config) == 1
        expected = capsys.readouterr().err.splitlines()[:-1]  # minus "N problem(s) found"
        with structlog.testing.capture_logs() as logs:
            r.sighup()
            await eventually(
                lambda: any(e["event"] == "config.rejected" for e in logs), what="rejection"
            )
        rejected = next(e for e in logs if e["event"] == "config.rejected")
        assert rejected["problems"] == expected
        weight = r.state().canary_weight
        await eventually(lambda: r.state().canary_weight > weight, what="rollout goes on")
        assert r.state().rollout_id == before.rollout_id
        assert r.daemon.api_token == TOKEN
        assert r.daemon.settings.canaries[0].router == "lb"


# --------------------------------------------------------------------------- SIGTERM


@pytest.mark.slow
async def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    """SIGTERM during a slow tick: the tick commits, due alerts go out, run() returns."""
    async with Receiver() as audit:
        web = canary(**SLOW, interval="1s")
        web["alerts"] = [{"name": "audit", "notifier": "audit", "events": "all"}]
        notifiers = {"audit": {"type": "webhook", "url": audit.url + "/events"}}
        async with backends() as (prom, router):
            config = write_config(
                tmp_path,
                [web],
                providers={"prom": {"type": "prometheus", "address": prom.url, "timeout": "5s"}},
                routers={"lb": {"type": "webhook", "url": router.url, "timeout": "2s"}},
                notifiers=notifiers,
            )
            daemon = Daemon(config, load_config(config), tick_grace=10.0, flush_grace=5.0)
            finished = anyio.Event()

            async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
                await daemon.run(task_status=task_status)
                finished.set()

            async with anyio.create_task_group() as tg:
                await tg.start(run)
                found = daemon.runner("prod/web")
                assert found is not None
                runner = found
                await runner.start_rollout("v2", {})
                await eventually(lambda: runner.state.canary_weight >= 1, what="first step")
                prom.delay = 0.5  # the next tick waits on Prometheus
                seen = len(prom.requests)
                await eventually(lambda: len(prom.requests) > seen, what="a tick in flight")
                ticks = runner.state.ticks
                os.kill(os.getpid(), signal.SIGTERM)
                with anyio.fail_after(8):
                    await finished.wait()
                tg.cancel_scope.cancel()
        assert runner.state.ticks == ticks + 1, "the tick in flight was committed"
        store = SqliteStore(tmp_path / "state.db")
        await store.open()
        try:
            assert (await store.load_states())["prod/web"].ticks == ticks + 1
            stats = await store.outbox_stats()
        finally:
            await store.close()
        assert stats["counts"].get("pending", 0) == 0
        assert stats["counts"]["sent"] >= 2
        events = [req.json["event"] for req in audit.requests]
        assert "rollout.started" in events and "weight.advanced" in events


async def test_a_hung_tick_is_abandoned_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tick that outlives ``tick_grace`` is cancelled so the stop stays bounded."""
    async with running(tmp_path, [canary(**SLOW)], tick_grace=0.3) as r:
        await start_rollout(r)
        runner = r.daemon.runner("prod/web")
        in_flight = anyio.Event()

        async def hang() -> None:
            in_flight.set()
            await anyio.sleep_forever()

        monkeypatch.setattr(runner, "tick", hang)
        with anyio.fail_after(5):
            await in_flight.wait()
        with structlog.testing.capture_logs() as logs:
            r.daemon.stop()
            with anyio.fail_after(5):
                await r.finished.wait()
        stopped = next(e for e in logs if e["event"] == "daemon.stopped")
        assert stopped["abandoned_ticks"] == 1
        assert stopped["outbox_waiting"] == 0  # messages left in the store (none configured)
