"""The daemon: config, store, adapters, one loop per canary, the API, signals, systemd.

Everything runs in one task group. Startup opens the store, starts every
canary's loop, the API, the outbox dispatcher and housekeeping, then tells
systemd ``READY=1`` (:mod:`canaryd.service.sdnotify`). A heartbeat sends ``STATUS=``
and, while every loop keeps ticking, ``WATCHDOG=1``.

SIGHUP reloads the config (``RELOADING=1`` ... ``READY=1``; a bad config is
rejected with the messages of ``canaryd check`` and the last good one kept).
SIGTERM/SIGINT stop gracefully (``STOPPING=1``): the loops stop after the tick
in flight (a tick is cancelled only after ``tick_grace``, see
:mod:`canaryd.service.scheduler`), the outbox gets ``flush_grace`` seconds to send what is due,
then the API stops and the store is closed. A second signal stops at once, and
so does cancelling :meth:`Daemon.run` from outside (ticks in flight are abandoned:
a state only changes once persisted, so an abandoned tick leaves no trace).
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import anyio.to_thread
import structlog

from canaryd.config.loader import Loaded, load_config
from canaryd.config.models import ProviderConfig, Settings, read_secret
from canaryd.core.analysis import CanaryState, Phase
from canaryd.errors import CanarydError, ConfigError, StoreError, TemplateError
from canaryd.http import HttpTransport, make_transport
from canaryd.providers import MetricsProvider, build_provider
from canaryd.routers import Router, build_router
from canaryd.service.dispatcher import Dispatcher
from canaryd.service.limits import RefusedCount, raise_fd_limit
from canaryd.service.metrics import DaemonMetrics
from canaryd.service.rollbacks import WRITE_SECONDS, Entry, RollbackJournal, journal_path
from canaryd.service.runtime import (
    MAX_OBSERVE_SECONDS,
    UNRECORDED_STOP_SECONDS,
    CanaryRunner,
    Services,
    freeze_heap,
)
from canaryd.service.scheduler import Scheduler
from canaryd.service.sdnotify import Notifier, watchdog_period
from canaryd.service.store import Retention, SqliteStore, StateStore, dumps
from canaryd.ui.live import LiveHub

if TYPE_CHECKING:
    from canaryd.service.lease import Lease
    from canaryd.service.pgstore import PostgresStore

log = structlog.get_logger()

HOUSEKEEPING_SECONDS = 60.0
"""How often old check records and events are pruned."""

STATUS_SECONDS = 10.0
"""How often ``STATUS=`` is refreshed when systemd asks for no watchdog."""

TICK_GRACE_SECONDS = 20.0
"""On stop, how long the ticks in flight may take before they are abandoned."""

FLUSH_GRACE_SECONDS = 5.0
"""On stop, how long the outbox may keep sending what is due."""

STALL_GRACE_SECONDS = 35.0
"""Slack beyond interval + observe budget (the observe deadline's 5 s, router and store
timeouts) before a loop whose next tick is late counts as stalled."""

FLUSH_POLL_SECONDS = 0.05

BEHIND_SECONDS = 1.0
"""Ticks starting later than this after their due time: the daemon is behind schedule
(``/readyz`` 503, ``STATUS=``, ``scheduler.behind``; docs/reliability.md)."""

BEHIND_LOG_SECONDS = 60.0
"""While behind, ``scheduler.behind`` is logged at most this often."""

LEASE_GUARD_SECONDS = 0.05
"""How often a replica checks its lease's local deadline (docs/ha.md)."""


@dataclass
class _Runner(CanaryRunner):
    """A runner that reports how long its ticks take."""

    on_tick: Callable[[float], None] | None = None

    async def safe_tick(self) -> None:
        """One tick; its duration goes to ``on_tick``."""
        started = time.monotonic()
        try:
            await super().safe_tick()
        finally:
            if self.on_tick is not None:
                self.on_tick(time.monotonic() - started)


@dataclass
class Daemon:
    """A running canaryd: owns the runners and what they share."""

    config_path: Path
    loaded: Loaded
    runners: dict[str, CanaryRunner] = field(default_factory=dict)
    ready: bool = False
    handle_signals: bool = True
    """Stop on SIGTERM/SIGINT and reload on SIGHUP; False when embedded (the demo)."""
    provider_overrides: Mapping[str, MetricsProvider] = field(default_factory=dict)
    """Providers used instead of the configured ones of the same name (demo stand-ins)."""
    notifier: Notifier = field(default_factory=Notifier.from_environ)
    metrics: DaemonMetrics = field(default_factory=DaemonMetrics)
    tick_grace: float = TICK_GRACE_SECONDS
    flush_grace: float = FLUSH_GRACE_SECONDS
    stall_grace: float = STALL_GRACE_SECONDS
    api_token: str | None = None
    scheduler: Scheduler = field(default_factory=Scheduler)
    live: LiveHub = field(default_factory=LiveHub)
    """Canary changes for the event stream and the dashboard (docs/api.md, "Live updates")."""
    _built: dict[str, tuple[ProviderConfig, MetricsProvider]] = field(default_factory=dict)
    """Providers this daemon built (it closes them), by name, with their config."""
    _since: dict[str, float] = field(default_factory=dict)
    _checks: dict[str, tuple[int, dict[str, Any] | None]] = field(default_factory=dict)
    _stop: anyio.Event | None = None
    _stop_asked: bool = False
    _stalled: list[str] = field(default_factory=list)
    _status: str = ""
    behind_seconds: float = BEHIND_SECONDS
    api_refused: RefusedCount | None = None
    """Connections the API closed at its cap (set once it listens)."""
    _behind: float = 0.0
    """How far behind schedule the last heartbeat found the ticks (0: on time)."""
    _behind_logged: float = -math.inf
    _said_behind: bool = False
    journal: RollbackJournal | None = None
    """Rollbacks written before they are sent (None: it could not be opened)."""
    _removed: dict[str, CanaryRunner] = field(default_factory=dict)
    """Loops a reload removed, by key: a canary added back continues from its old loop."""
    lease: Lease | None = None
    """The leader lease when the state is in PostgreSQL (docs/ha.md); None with SQLite."""
    _lease_event: anyio.Event | None = None
    """Set when the lease changes hands (wakes a follower waiting to lead)."""

    def __post_init__(self) -> None:
        """Read the API token of the initial config.

        Raises:
            SecretError: the token file cannot be read or is readable by others.
        """
        self.api_token = _token(self.settings)

    @property
    def settings(self) -> Settings:
        """The configuration in force."""
        return self.loaded.settings

    def runner(self, key: str) -> CanaryRunner | None:
        """The runner of ``namespace/name``, if configured."""
        return self.runners.get(key)

    def stop(self) -> None:
        """Ask for a graceful stop (what SIGTERM does)."""
        self._stop_asked = True
        if self._stop is not None:
            self._stop.set()

    # ------------------------------------------------------------------ lifecycle

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled, or until :meth:`stop` (or a signal) and a graceful stop.

        Raises:
            StoreError: the state store cannot be opened.
            OSError: the API cannot listen on its address.
        """
        from canaryd.service.api import serve

        self._stop = anyio.Event()
        if self._stop_asked:
            self._stop.set()
        store = self._open_store()
        await store.open()
        journalled: dict[str, Entry] = {}
        if not self.settings.postgres:  # SQLite: its filesystem may fill (docs/reliability.md)
            self.journal, journalled = await _open_journal(self.settings.state_path)
        try:
            async with make_transport() as session:
                self.services = self._services(self.settings, session, store)
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    if self.handle_signals:
                        await tg.start(self._signals)
                    if self.lease is not None and not await self._follow(tg):
                        tg.cancel_scope.cancel()  # stopped while a follower
                        return
                    states = await store.load_states()
                    pending = await store.load_pending()
                    for canary in self.settings.canaries:
                        self._start_runner(canary.key, states.get(canary.key))
                        self.runners[canary.key].restore(pending.get(canary.key))
                        self.runners[canary.key].recover(journalled.get(canary.key))
                    freeze_heap()
                    tg.start_soon(self.scheduler.run)
                    self.dispatcher = Dispatcher(lambda: self.services, store, time.time)
                    if self.lease is None:  # a follower serves the API already
                        await tg.start(serve, self)
                    tg.start_soon(self.dispatcher.run)
                    tg.start_soon(self._housekeeping, store)
                    self.ready = True
                    self.notifier.ready(self.status_line())
                    if self.lease is None:  # a follower's heartbeat runs already
                        tg.start_soon(self._heartbeat)
                    log.info(
                        "daemon.started", canaries=len(self.runners), listen=self.settings.listen
                    )
                    task_status.started()
                    await self._stop.wait()  # cancelled from outside: the scheduler abandons ticks
                    await self._shutdown()
                    tg.cancel_scope.cancel()
        finally:
            self.ready = False
            with anyio.CancelScope(shield=True):
                await _close_providers([p for _, p in self._built.values()])
                self._built.clear()
                if self.lease is not None:
                    await self.lease.release()
                await store.close()
                if self.journal is not None:
                    self.journal.close()
        if self.lease is not None and self.lease.lost:
            raise StoreError("lost the leader lease: stopped deciding (docs/ha.md)")

    def _open_store(self) -> SqliteStore | PostgresStore:
        """The configured store: SQLite, or PostgreSQL fenced by a new leader lease."""
        if not self.settings.postgres:
            return SqliteStore(self.settings.state_path)
        from canaryd.service.lease import Lease
        from canaryd.service.pgstore import PostgresStore

        ha = self.settings.ha
        address = ha.advertise or f"http://{self.settings.listen}"
        self.lease = Lease(self.settings.state, ha.cluster, address, ha.leaseTtl)
        return PostgresStore(self.settings.state, fence=self.lease)

    async def _follow(self, tg: anyio.abc.TaskGroup) -> bool:
        """Serve reads from the database until this replica leads; False if stopped first."""
        from canaryd.service.api import serve

        assert self.lease is not None and self._stop is not None
        lease = self.lease
        await self._refresh_views()
        await tg.start(serve, self)
        self._lease_event = first = anyio.Event()
        tg.start_soon(lease.run, self._on_lease)
        tg.start_soon(self._guard_lease)
        with anyio.move_on_after(lease.renew_every):  # ready once it knows who leads
            await first.wait()
        self.ready = True
        self.notifier.ready(self.status_line())
        tg.start_soon(self._heartbeat)
        while not lease.leading:
            self._lease_event = changed = anyio.Event()
            with anyio.move_on_after(lease.renew_every):
                async with anyio.create_task_group() as waits:  # whichever comes first
                    for event in (self._stop, changed):
                        waits.start_soon(_set_then_cancel, event, waits.cancel_scope)
            if self._stop.is_set():
                return False
            if not lease.leading:
                await self._refresh_views()
        log.info("lease.acquired", epoch=lease.epoch, cluster=lease.cluster)
        return True

    async def _guard_lease(self) -> None:
        """Stop at the lease's local deadline even if renewals hang (no database I/O here)."""
        assert self.lease is not None
        while not self.lease.lost:  # noqa: ASYNC110 - a clock deadline, no event to wait on
            await anyio.sleep(LEASE_GUARD_SECONDS)
        self._on_lease()

    def _on_lease(self) -> None:
        """The lease changed hands: tell systemd; a leader that lost it stops at once."""
        assert self.lease is not None
        self._status = self.status_line()
        self.notifier.status(self._status)
        if self._lease_event is not None:
            self._lease_event.set()
        if self.lease.lost:
            log.error("lease.lost", cluster=self.lease.cluster)
            self._tg.cancel_scope.cancel()

    async def _refresh_views(self) -> None:
        """A follower's copies of the canaries, read from the database (not scheduled)."""
        try:
            states = await self.services.store.load_states()
        except CanarydError as exc:
            log.error("state.read_failed", error=str(exc))
            return
        for canary in self.settings.canaries:
            state = states.get(canary.key) or CanaryState()
            view = self.runners.get(canary.key)
            if view is None:
                view = self.runners[canary.key] = _Runner(canary, state, self.services)
            view.state = state
            self.metrics.track(canary.key, state)

    @property
    def role(self) -> str:
        """``leader`` or ``follower`` (a daemon on SQLite always leads)."""
        return "leader" if self.lease is None or self.lease.leading else "follower"

    @property
    def leader_address(self) -> str | None:
        """The API address of the replica that leads, when known."""
        if self.lease is None:
            return None
        return self.lease.leader.address if self.lease.leader is not None else None

    async def _shutdown(self) -> None:
        """Stop the loops after their ticks, then let the outbox send what is due."""
        started = time.monotonic()
        self.ready = False
        self.notifier.stopping()
        abandoned = await self._stop_runners()
        pending = await self._flush_outbox()
        log.info(
            "daemon.stopped",
            seconds=round(time.monotonic() - started, 3),
            abandoned_ticks=abandoned,
            outbox_due=pending,
        )

    async def _stop_runners(self) -> int:
        """Stop the loops after their ticks in flight; return how many were abandoned.

        Then each loop tries to record what the store could not take before (all
        together :data:`UNRECORDED_STOP_SECONDS` at most; docs/reliability.md).
        """
        abandoned = await self.scheduler.stop(self.tick_grace)
        deadline = time.monotonic() + UNRECORDED_STOP_SECONDS
        for runner in [*self.runners.values(), *self._removed.values()]:
            await runner.close(max(0.0, deadline - time.monotonic()))
        return abandoned

    async def _flush_outbox(self) -> int:
        """Wait (bounded) until no outbox message is due; return how many still are."""
        store = self.services.store
        try:
            with anyio.move_on_after(self.flush_grace):
                # the dispatcher delivers; this only watches the store until nothing is due
                while await store.due(time.time()):  # noqa: ASYNC110
                    await anyio.sleep(FLUSH_POLL_SECONDS)
            return len(await store.due(time.time()))
        except CanarydError as exc:
            log.error("outbox.store_failed", error=str(exc))
            return -1

    def _services(self, settings: Settings, session: HttpTransport, store: StateStore) -> Services:
        """What the runners of ``settings`` share; providers of unchanged config are kept.

        Providers replaced or removed by a new config are closed a while later
        (:meth:`_retire`), once ticks that started with them are over.
        """
        built: dict[str, tuple[ProviderConfig, MetricsProvider]] = {}
        providers: dict[str, MetricsProvider] = {}
        for name, cfg in settings.providers.items():
            override = self.provider_overrides.get(name)
            if override is None:
                kept = self._built.get(name)
                built[name] = (
                    kept if kept is not None and kept[0] == cfg else (cfg, build_provider(cfg))
                )
            providers[name] = self.metrics.provider(name, override or built[name][1])
        routers: Mapping[str, Router] = {
            name: build_router(name, cfg, session) for name, cfg in settings.routers.items()
        }
        current = {id(p) for _, p in built.values()}
        retired = [p for _, p in self._built.values() if id(p) not in current]
        self._built = built
        if retired:
            self._tg.start_soon(self._retire, retired)
        return Services(
            settings,
            session,
            providers,
            routers,
            store,
            on_change=self._changed,
            journal=self.journal,
            epoch=self._epoch,
            leading=lambda: self.role == "leader",
        )

    def _epoch(self) -> int | None:
        """The lease epoch this replica decides under (None without a lease)."""
        return None if self.lease is None else self.lease.epoch

    async def _retire(self, providers: list[MetricsProvider]) -> None:
        """Close providers a new config replaced, after the longest a tick may observe."""
        try:
            await anyio.sleep(MAX_OBSERVE_SECONDS + self.tick_grace)
        finally:
            with anyio.CancelScope(shield=True):
                await _close_providers(providers)

    def _changed(self, key: str, state: CanaryState) -> None:
        self.metrics.changed(key, state)
        self.live.publish(key)
        status = self.status_line()
        if status != self._status:  # one datagram per change of the summary, not per tick
            self._status = status
            self.notifier.status(status)

    def _start_runner(self, key: str, state: CanaryState | None) -> None:
        spec = self.services.settings.canary(key)
        assert spec is not None
        runner = _Runner(spec, state or CanaryState(), self.services)
        predecessor = self._removed.pop(key, None)
        if predecessor is not None:  # its state is read once its last tick has ended
            runner.succeed(predecessor)
        runner.on_tick = self.metrics.tick_seconds.observe
        self.runners[key] = runner
        self._since[key] = self.services.clock()
        self._checks.pop(key, None)
        self.metrics.track(key, runner.state)
        runner.schedule(self.scheduler)

    def _drained(self, key: str, runner: CanaryRunner) -> Callable[[], None]:
        """What a removed loop calls once its pending rollback went out: stop ticking it
        (unless the canary was added back meanwhile; docs/reliability.md)."""

        def done() -> None:
            if self._removed.get(key) is runner:
                self.scheduler.remove(key)
                del self._removed[key]

        return done

    async def _housekeeping(self, store: StateStore) -> None:
        while True:
            await anyio.sleep(HOUSEKEEPING_SECONDS)
            try:
                await store.prune(keep=retention(self.settings))
            except CanarydError as exc:
                log.error("store.prune_failed", error=str(exc))

    # ------------------------------------------------------------------ signals, reload

    async def _signals(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            task_status.started()
            async for signum in sigs:
                if signum == signal.SIGHUP:
                    self.notifier.reloading()
                    await self.reload()
                    self.notifier.ready(self.status_line())
                    continue
                log.info("daemon.stopping", signal=signal.Signals(signum).name)
                if self._stop_asked:  # a second signal: stop now
                    self._tg.cancel_scope.cancel()
                self.stop()

    async def reload(self) -> bool:
        """Load the config again and apply it; keep the last good one on error.

        New canaries start, removed ones stop after their tick (their state
        stays in the store), changed ones use the new config from their next
        tick on, keeping their rollout. A canary added back continues from
        its removed loop's state, read once that loop's last tick has ended
        (see docs/reliability.md).
        """
        try:
            loaded = load_config(self.config_path)
            check_queries(loaded.settings)
            token = _token(loaded.settings)
            services = self._services(loaded.settings, self.services.session, self.services.store)
        except ConfigError as exc:
            log.error("config.rejected", problems=[str(p) for p in exc.problems])
            return False
        except (CanarydError, ValueError) as exc:
            log.error("config.rejected", problems=[str(exc)])
            return False
        old = {c.key for c in self.settings.canaries}
        new = {c.key for c in loaded.settings.canaries}
        self.loaded, self.services, self.api_token = loaded, services, token
        for key in old - new:
            self._removed[key] = removed = self.runners.pop(key)
            if not removed.retire(on_drained=self._drained(key, removed)):
                self.scheduler.remove(key)
        for key in [k for k, r in self._removed.items() if r.settled and k not in new]:
            del self._removed[key]  # retired and idle: its last decision is in the store
        for key in old & new:
            runner = self.runners[key]
            spec = loaded.settings.canary(key)
            assert spec is not None
            runner.reconfigure(spec, loaded.settings, self.services)
        states = await self.services.store.load_states()
        pending = await self.services.store.load_pending()
        for key in sorted(new - old):
            self._start_runner(key, states.get(key))
            self.runners[key].restore(pending.get(key))
        log.info("config.loaded", canaries=len(self.runners), reloaded=True)
        return True

    # ------------------------------------------------------------------ health

    def status_line(self) -> str:
        """One line for ``systemctl status``: ``3 canaries, 1 progressing, 0 failed``."""
        states = [r.state for r in self.runners.values()]
        n = len(states)
        line = (
            f"{n} {'canary' if n == 1 else 'canaries'}, "
            f"{sum(s.active for s in states)} progressing, "
            f"{sum(s.phase is Phase.FAILED for s in states)} failed"
        )
        if self._behind:
            line += f"; behind schedule by {self._behind:.1f}s"
        if self._stalled:
            line += f"; stalled: {', '.join(self._stalled)}"
        if self.lease is not None:  # docs/ha.md
            if self.lease.leading:
                return f"leader (epoch {self.lease.epoch}): {line}"
            return f"follower of {self.leader_address or 'nobody yet'}: {line}"
        return line

    def schedule_lag(self) -> float:
        """How far behind their due time ticks start now, in seconds (see the scheduler)."""
        return self.scheduler.lag(anyio.current_time())

    def _check_schedule(self) -> None:
        """Note whether the ticks are behind schedule; log it at most once a minute."""
        lag = self.schedule_lag()
        behind = lag if lag > self.behind_seconds else 0.0
        now = time.monotonic()
        if behind and now - self._behind_logged >= BEHIND_LOG_SECONDS:
            self._behind_logged, self._said_behind = now, True
            log.warning(
                "scheduler.behind",
                lag_seconds=round(lag, 3),
                ticking=self.scheduler.ticking,
                waiting=self.scheduler.overdue(anyio.current_time()),
                canaries=len(self.runners),
            )
        elif not behind and self._said_behind:  # flapping around the line: one pair a minute
            self._said_behind = False
            log.info("scheduler.caught_up", lag_seconds=round(lag, 3))
        self._behind = behind

    def stalled(self, now: float) -> list[str]:
        """Canaries whose loop has not started a tick for longer than it possibly could.

        A canary whose tick is due and waits for a free slot (the daemon is behind
        schedule) is late, not stalled: the scheduler starts it in its turn.
        """
        out = []
        loop_now = anyio.current_time()
        for key, runner in self.runners.items():
            if self.scheduler.queued(key, loop_now):
                continue  # waits its turn behind schedule: late, not stalled
            interval = runner.spec.analysis.interval
            # a webhook's own timeout may hold a tick beyond the interval (docs/flagger.md)
            limit = runner.observe_limit()
            since = max(runner.last_tick, self._since.get(key, now))
            if now - since > interval + limit + self.stall_grace:
                out.append(key)
        return sorted(out)

    async def _heartbeat(self) -> None:
        """``WATCHDOG=1`` at half systemd's period while the loops tick; ``STATUS=`` always."""
        period = watchdog_period()
        while True:
            self._check_schedule()
            stalled = self.stalled(self.services.clock())
            if stalled != self._stalled:
                if stalled:
                    log.error("watchdog.withheld", stalled=stalled)
                else:
                    log.info("watchdog.resumed")
                self._stalled = stalled
            if period is not None and not stalled:
                self.notifier.watchdog(self.status_line())
            else:
                self.notifier.status(self.status_line())
            await anyio.sleep(period / 2 if period is not None else STATUS_SECONDS)

    async def last_check(self, runner: CanaryRunner) -> dict[str, Any] | None:
        """The runner's most recent check record (cached until its next decision).

        Raises:
            StoreError: the history cannot be read.
        """
        if runner.last_record is not None:  # saved by this process: no store read (a busy
            saved: dict[str, Any] = json.loads(dumps(runner.last_record.as_dict()))  # store
            return saved  # would stall /metrics under overload, when it matters most)
        version = runner.version  # read before the await: a tick may commit meanwhile
        cached = self._checks.get(runner.key)
        if cached is not None and cached[0] == version:
            return cached[1]
        rows = await runner.services.store.history(runner.key, 1)
        record = rows[0] if rows else None
        self._checks[runner.key] = (version, record)
        return record


def retention(settings: Settings) -> Retention:
    """The store's retention from the config's ``history`` section."""
    h = settings.history
    return Retention(h.keep, h.maxAge, h.failedKeep, h.failedMaxAge, h.checksPerRollout)


def _token(settings: Settings) -> str | None:
    """The API token named by the config, if any.

    Raises:
        ValueError: the token file cannot be read or is readable by others.
    """
    secret = read_secret(settings.api.token_file, settings.api.token_env)
    return secret.get_secret_value() if secret else None


def check_queries(settings: Settings) -> None:
    """Render every canary's metric queries, as the daemon will.

    Raises:
        ConfigError: a template names an unknown variable or mesh.
    """
    from canaryd.config.queries import resolve_metrics
    from canaryd.errors import Problem

    problems = []
    for i, canary in enumerate(settings.canaries):
        try:
            resolve_metrics(settings, canary)
        except TemplateError as exc:
            problems.append(Problem("<config>", 0, 0, f"canaries[{i}].analysis.metrics", str(exc)))
    if problems:
        raise ConfigError(problems)


_EXPECTED = (CanarydError, OSError, ValueError)


def _failures(exc: BaseException) -> list[BaseException] | None:
    """The expected errors inside ``exc`` (task groups wrap them), or None for a bug."""
    if isinstance(exc, BaseExceptionGroup):
        found: list[BaseException] = []
        for inner in exc.exceptions:
            more = _failures(inner)
            if more is None:
                return None
            found += more
        return found
    return [exc] if isinstance(exc, _EXPECTED) else None


async def run_daemon(config_path: Path) -> int:
    """``canaryd run``: load the config and run until stopped.

    Returns:
        The process exit code (0 on a clean stop, 1 on a config, store or listen error).
    """
    try:
        loaded = load_config(config_path)
        check_queries(loaded.settings)
    except ConfigError as exc:
        for problem in exc.problems:
            log.error("config.rejected", problem=str(problem))
        return 1
    for warning in loaded.warnings:
        log.warning("config.warning", warning=warning)
    log.info("config.loaded", canaries=len(loaded.settings.canaries), files=loaded.files)
    raise_fd_limit()
    try:
        await Daemon(config_path, loaded).run()
    except (*_EXPECTED, BaseExceptionGroup) as exc:
        failures = _failures(exc)
        if failures is None:
            raise
        for failure in failures:
            log.error("daemon.failed", error=str(failure))
        return 1
    return 0


async def _open_journal(state_path: Path) -> tuple[RollbackJournal | None, dict[str, Entry]]:
    """Open the rollback journal next to the state file and read it (docs/reliability.md);
    without it (logged at error) rollbacks still go out, only unjournalled."""
    journal = RollbackJournal(journal_path(state_path))
    try:
        with anyio.fail_after(WRITE_SECONDS):
            entries = await anyio.to_thread.run_sync(journal.open, abandon_on_cancel=True)
    except (OSError, TimeoutError) as exc:
        log.error("rollback.journal_unavailable", error=str(exc))
        return None, {}
    return journal, entries


async def _set_then_cancel(event: anyio.Event, scope: anyio.CancelScope) -> None:
    """Wait for ``event``, then cancel ``scope`` (the first of several waits to end)."""
    await event.wait()
    scope.cancel()


async def _close_providers(providers: list[MetricsProvider]) -> None:
    """Close providers' connections (each within a second: nothing waits on them)."""
    for provider in providers:
        with anyio.move_on_after(1.0):
            await provider.aclose()
