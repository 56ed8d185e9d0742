"""The supervisor: one task group for everything a daemon runs, reload, signals, stop.

Startup (after the composition root opened the store and built the services)
starts every canary's loop, the API, the outbox dispatcher and housekeeping,
then tells systemd ``READY=1`` (:mod:`canaryd.service.sdnotify`); the heartbeat
(:mod:`canaryd.service.health`) sends ``STATUS=`` and, while every loop keeps
ticking, ``WATCHDOG=1``. A replica that shares its state in PostgreSQL first
follows: it serves reads until it holds the leader lease
(:mod:`canaryd.service.leadership`, docs/ha.md).

SIGHUP reloads the config (``RELOADING=1`` ... ``READY=1``; a bad config is
rejected with the messages of ``canaryd check`` and the last good one kept).
SIGTERM/SIGINT stop gracefully (``STOPPING=1``): the loops stop after the tick
in flight (a tick is cancelled only after ``tick_grace``, see
:mod:`canaryd.service.scheduler`), the outbox gets ``flush_grace`` seconds to
send what is due, then the task group ends (the API stops) and the composition
root closes the store. A second signal stops at once, and so does cancelling
the run from outside (ticks in flight are abandoned: a state only changes once
persisted, so an abandoned tick leaves no trace).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import anyio
import anyio.abc
import structlog

from canaryd.core.analysis import CanaryState
from canaryd.errors import CanarydError, ConfigError
from canaryd.service.adapters import Built
from canaryd.service.dispatcher import Dispatcher
from canaryd.service.leadership import Leadership
from canaryd.service.lifecycle import UNRECORDED_STOP_SECONDS
from canaryd.service.rollbacks import Entry
from canaryd.service.runtime import CanaryRunner, freeze_heap
from canaryd.service.store import Retention, StateStore

if TYPE_CHECKING:
    from canaryd.config.models import Settings
    from canaryd.service.daemon import Daemon

log = structlog.get_logger()

HOUSEKEEPING_SECONDS = 60.0
"""How often old check records and events are pruned."""

FLUSH_POLL_SECONDS = 0.05
"""How often the shutdown flush looks whether an outbox message is still due."""

RETIRE_POLL_SECONDS = 0.5
"""After its grace, how often a retired adapter's close looks whether a loop still uses it."""


class Supervisor:
    """Runs a daemon's loops, API, dispatcher and housekeeping in one task group."""

    def __init__(self, daemon: Daemon) -> None:
        """Supervise ``daemon`` (its graces are read when used)."""
        self.daemon = daemon
        self.removed: dict[str, CanaryRunner] = {}
        """Loops a reload removed, by key: a canary added back continues from its old loop."""
        self._tg: anyio.abc.TaskGroup | None = None
        self._stop: anyio.Event | None = None
        self._stop_asked = False
        self.leadership = Leadership(daemon)

    @property
    def tg(self) -> anyio.abc.TaskGroup:
        """The task group everything runs in (only while :meth:`run` runs)."""
        assert self._tg is not None, "the daemon is not running"
        return self._tg

    def stop(self) -> None:
        """Ask for a graceful stop (what SIGTERM does)."""
        self._stop_asked = True
        if self._stop is not None:
            self._stop.set()

    async def run(
        self,
        store: StateStore,
        journalled: Mapping[str, Entry],
        task_status: anyio.abc.TaskStatus[None],
    ) -> None:
        """Run until cancelled, or until :meth:`stop` (or a signal) and a graceful stop.

        Raises:
            StoreError: the state cannot be read.
            OSError: the API cannot listen on its address.
        """
        d = self.daemon
        self._stop = stop = anyio.Event()
        if self._stop_asked:
            stop.set()
        async with anyio.create_task_group() as tg:
            self._tg = tg
            if d.handle_signals:
                await tg.start(self._signals)
            if d.lease is not None and not await self.leadership.follow(tg, stop):
                tg.cancel_scope.cancel()  # stopped while a follower
                return
            await self._start_loops(tg, store, journalled)
            await self._start_services(tg, store)
            log.info("daemon.started", canaries=len(d.runners), listen=d.settings.listen)
            task_status.started()
            await stop.wait()  # cancelled from outside: the scheduler abandons ticks
            await self._shutdown()
            tg.cancel_scope.cancel()

    async def _start_loops(
        self, tg: anyio.abc.TaskGroup, store: StateStore, journalled: Mapping[str, Entry]
    ) -> None:
        """Start every canary's loop from its stored state, pending routes and journal.

        Raises:
            StoreError: the state cannot be read.
        """
        d = self.daemon
        states = await store.load_states()
        pending = await store.load_pending()
        for canary in d.settings.canaries:
            self._start_runner(canary.key, states.get(canary.key))
            d.runners[canary.key].restore(pending.get(canary.key))
            d.runners[canary.key].recover(journalled.get(canary.key))
        d.health.loops_running = True  # changes go to these runners from now on (docs/ha.md)
        freeze_heap()
        tg.start_soon(d.scheduler.run)

    async def _start_services(self, tg: anyio.abc.TaskGroup, store: StateStore) -> None:
        """Start the API (a follower's runs already), the dispatcher, housekeeping and the
        heartbeat; tell systemd the daemon is ready.

        Raises:
            OSError: the API cannot listen on its address.
        """
        from canaryd.service.api import serve

        d = self.daemon
        d.dispatcher = dispatcher = Dispatcher(lambda: d.services, store, time.time)
        if d.lease is None:  # a follower serves the API already
            await tg.start(serve, d)
        tg.start_soon(dispatcher.run)
        tg.start_soon(self._housekeeping, store)
        d.ready = True
        d.notifier.ready(d.health.status_line())
        if d.lease is None:  # a follower's heartbeat runs already
            tg.start_soon(d.health.heartbeat)

    # ------------------------------------------------------------------ loops

    def _start_runner(self, key: str, state: CanaryState | None) -> None:
        d = self.daemon
        runner = d.new_runner(key, state or CanaryState())
        predecessor = self.removed.pop(key, None)
        if predecessor is not None:  # its state is read once its last tick has ended
            runner.succeed(predecessor)
        d.runners[key] = runner
        d.health.started(key, d.services.clock())
        d.forget_check(key)
        d.metrics.track(key, runner.state)
        runner.schedule(d.scheduler)

    def _drained(self, key: str, runner: CanaryRunner) -> Callable[[], None]:
        """What a removed loop calls once its pending rollback went out: stop ticking it
        (unless the canary was added back meanwhile); forget it unless it gave up recording
        decisions, which a loop adding the canary back takes over (docs/reliability.md)."""

        def done() -> None:
            if self.removed.get(key) is runner:
                self.daemon.scheduler.remove(key)
                if not runner.unrecorded:
                    del self.removed[key]

        return done

    async def _housekeeping(self, store: StateStore) -> None:
        while True:
            await anyio.sleep(HOUSEKEEPING_SECONDS)
            try:
                await store.prune(keep=retention(self.daemon.settings))
            except CanarydError as exc:
                log.error("store.prune_failed", error=str(exc))

    def retire(self, retired: list[Built]) -> None:
        """Close adapters a new config replaced or removed once no tick or command can
        still use them: after ``retire_grace``, and once every loop that held them when
        they were retired has let them go (docs/design.md, "Service").

        A loop lets them go when it is idle with everything recorded and routed, or
        once it ticks with the new config; a removed loop still sending its pending
        rollback keeps its old router open until the router took it. The loops are
        read now, before the reload reconfigures them.
        """
        if not retired:
            return
        d = self.daemon
        ids = {id(b.adapter) for b in retired}
        holders = [r for r in (*d.runners.values(), *self.removed.values()) if _holds(r, ids)]
        self.tg.start_soon(self._retire, retired, holders, ids)

    async def _retire(
        self, retired: list[Built], holders: list[CanaryRunner], ids: set[int]
    ) -> None:
        """Close ``retired`` once the grace has passed and no loop of ``holders`` uses them;
        cancelled at stop, when the composition root closes them after the loops."""
        await anyio.sleep(self.daemon.retire_grace)
        while holders := [r for r in holders if not r.settled and _holds(r, ids)]:  # noqa: ASYNC110
            await anyio.sleep(RETIRE_POLL_SECONDS)
        with anyio.CancelScope(shield=True):  # bounded: each close within CLOSE_SECONDS
            await self.daemon.adapters.close(retired)

    # ------------------------------------------------------------------ signals, reload

    async def _signals(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        d = self.daemon
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            task_status.started()
            async for signum in sigs:
                if signum == signal.SIGHUP:
                    d.notifier.reloading()
                    await self.reload()
                    d.notifier.ready(d.health.status_line())
                    continue
                log.info("daemon.stopping", signal=signal.Signals(signum).name)
                if self._stop_asked:  # a second signal: stop now
                    self.tg.cancel_scope.cancel()
                self.stop()

    async def reload(self) -> bool:
        """Load the config again and apply it; keep the last good one on error.

        New canaries start, removed ones stop after their tick (their state
        stays in the store), changed ones use the new config from their next
        tick on, keeping their rollout. A canary added back continues from
        its removed loop's state, read once that loop's last tick has ended
        (see docs/reliability.md).
        """
        d = self.daemon
        try:
            loaded, services, token = d.rebuild()
        except ConfigError as exc:
            log.error("config.rejected", problems=[str(p) for p in exc.problems])
            return False
        except (CanarydError, ValueError) as exc:
            log.error("config.rejected", problems=[str(exc)])
            return False
        old = {c.key for c in d.settings.canaries}
        new = {c.key for c in loaded.settings.canaries}
        d.loaded, d.services, d.api_token = loaded, services, token
        self._remove_loops(old - new, new)
        for key in old & new:
            spec = loaded.settings.canary(key)
            assert spec is not None
            d.runners[key].reconfigure(spec, loaded.settings, d.services)
        states = await d.services.store.load_states()
        pending = await d.services.store.load_pending()
        for key in sorted(new - old):
            self._start_runner(key, states.get(key))
            d.runners[key].restore(pending.get(key))
        log.info("config.loaded", canaries=len(d.runners), reloaded=True)
        return True

    def _remove_loops(self, keys: set[str], kept: set[str]) -> None:
        """Retire the loops of ``keys``: each stops after its tick, or once its pending
        rollback went out; forget retired loops that are idle and not in ``kept``."""
        d = self.daemon
        for key in keys:
            self.removed[key] = removed = d.runners.pop(key)
            if not removed.retire(on_drained=self._drained(key, removed)):
                d.scheduler.remove(key)
        for key in [k for k, r in self.removed.items() if r.settled and k not in kept]:
            del self.removed[key]  # retired and idle: its last decision is in the store

    # ------------------------------------------------------------------ shutdown

    async def _shutdown(self) -> None:
        """Stop the loops after their ticks, then let the outbox send what is due."""
        d = self.daemon
        started = time.monotonic()
        d.ready = False
        d.notifier.stopping()
        abandoned = await self._stop_runners()
        flushed = await flush_outbox(d.services.store, d.flush_grace)
        log.info(
            "daemon.stopped",
            seconds=round(time.monotonic() - started, 3),
            abandoned_ticks=abandoned,
            outbox_waiting=-1 if flushed < 0 else await outbox_waiting(d.services.store),
        )

    async def _stop_runners(self) -> int:
        """Stop the loops after their ticks in flight; return how many were abandoned.

        Then each loop tries to record what the store could not take before (all
        together :data:`UNRECORDED_STOP_SECONDS` at most; docs/reliability.md).
        """
        d = self.daemon
        abandoned = await d.scheduler.stop(d.tick_grace)
        deadline = time.monotonic() + UNRECORDED_STOP_SECONDS
        for runner in [*d.runners.values(), *self.removed.values()]:
            await runner.close(max(0.0, deadline - time.monotonic()))
        return abandoned


async def flush_outbox(store: StateStore, grace: float) -> int:
    """Wait, at most ``grace`` seconds, until no outbox message is due; return how many
    canaries still have one due (the store's ``due``: each canary's oldest pending
    message; -1: the store could not tell).

    The dispatcher, still running, delivers; this only watches the store. A second
    signal cancels the wait like everything else (docs/design.md, "Service").
    """
    try:
        with anyio.move_on_after(grace):
            while await store.due(time.time()):  # noqa: ASYNC110
                await anyio.sleep(FLUSH_POLL_SECONDS)
        return len(await store.due(time.time()))
    except CanarydError as exc:
        log.error("outbox.store_failed", error=str(exc))
        return -1


async def outbox_waiting(store: StateStore) -> int:
    """How many outbox messages wait in the store for the next start: every pending one
    (due or backing off, of every canary) and every held one; -1: the store could not tell.
    """
    try:
        counts = (await store.outbox_stats())["counts"]
    except CanarydError as exc:
        log.error("outbox.store_failed", error=str(exc))
        return -1
    return sum(int(counts.get(status, 0)) for status in ("pending", "held"))


def retention(settings: Settings) -> Retention:
    """The store's retention from the config's ``history`` section."""
    h = settings.history
    return Retention(h.keep, h.maxAge, h.failedKeep, h.failedMaxAge, h.checksPerRollout)


def _holds(runner: CanaryRunner, ids: set[int]) -> bool:
    """Whether the runner's services (the ones it ticks with now) include one of ``ids``."""
    services = runner.services
    adapters = (*services.providers.values(), *services.routers.values())
    return any(id(adapter) in ids for adapter in adapters)
