"""The composition root: settings -> store, HTTP, providers, routers -> runners.

:class:`Daemon` builds a running canaryd from its config and holds its parts:
the state store (SQLite, or PostgreSQL with a leader lease), the outgoing HTTP
transport, the metric providers and routers, and one
:class:`~canaryd.service.runtime.CanaryRunner` per canary. It decides nothing:
:mod:`canaryd.service.supervisor` runs the loops, the API, the dispatcher,
signals, reload and stop; :mod:`canaryd.service.health` says how the daemon is
doing (``/readyz``, ``STATUS=``, watchdog, leader or follower). :meth:`Daemon.run`
opens what the daemon holds, hands it to the supervisor and closes it again,
whatever the end (docs/design.md, "Service").
"""

from __future__ import annotations

import json
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
from canaryd.config.models import ProviderConfig, RouterConfig, Settings, read_secret
from canaryd.core.analysis import CanaryState
from canaryd.errors import CanarydError, ConfigError, StoreError, TemplateError
from canaryd.http import HttpTransport, make_transport
from canaryd.providers import MetricsProvider, build_provider
from canaryd.routers import Router, build_router
from canaryd.service.adapters import Adapters, with_secret_files
from canaryd.service.dispatcher import Dispatcher
from canaryd.service.health import Health
from canaryd.service.limits import RefusedCount, raise_fd_limit
from canaryd.service.metrics import DaemonMetrics
from canaryd.service.observe import MAX_OBSERVE_SECONDS
from canaryd.service.rollbacks import WRITE_SECONDS, Entry, RollbackJournal, journal_path
from canaryd.service.runtime import CanaryRunner
from canaryd.service.scheduler import Scheduler
from canaryd.service.sdnotify import Notifier
from canaryd.service.services import Services
from canaryd.service.store import SqliteStore, StateStore, dumps
from canaryd.service.supervisor import Supervisor
from canaryd.ui.live import LiveHub

if TYPE_CHECKING:
    from canaryd.service.lease import Lease
    from canaryd.service.store.postgres import PostgresStore

log = structlog.get_logger()

TICK_GRACE_SECONDS = 20.0
"""On stop, how long the ticks in flight may take before they are abandoned."""

RETIRE_GRACE_SECONDS = MAX_OBSERVE_SECONDS + TICK_GRACE_SECONDS
"""After a reload, how long at least a replaced provider or router stays open (the longest
a tick may observe, and then route); longer while a tick or command still uses it."""

FLUSH_GRACE_SECONDS = 5.0
"""On stop, how long the outbox may keep sending what is due."""

STALL_GRACE_SECONDS = 35.0
"""Slack beyond interval + observe budget (the observe deadline's 5 s, router and store
timeouts) before a loop whose next tick is late counts as stalled."""

BEHIND_SECONDS = 1.0
"""Ticks starting later than this after their due time: the daemon is behind schedule
(``/readyz`` 503, ``STATUS=``, ``scheduler.behind``; docs/reliability.md)."""


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
    """A canaryd built from its config: owns the runners and what they share."""

    config_path: Path
    loaded: Loaded
    runners: dict[str, CanaryRunner] = field(default_factory=dict)
    ready: bool = False
    handle_signals: bool = True
    """Stop on SIGTERM/SIGINT and reload on SIGHUP; False when embedded (the demo)."""
    provider_overrides: Mapping[str, MetricsProvider] = field(default_factory=dict)
    """Providers used instead of the configured ones of the same name (demo stand-ins)."""
    provider_factory: Callable[[ProviderConfig], MetricsProvider] = build_provider
    router_factory: Callable[[str, RouterConfig, HttpTransport], Router] = build_router
    """How providers and routers are built from their config (tests pass fakes)."""
    adapters: Adapters = field(default_factory=Adapters)
    """The providers and routers built, kept across reloads and closed (docs/design.md)."""
    notifier: Notifier = field(default_factory=Notifier.from_environ)
    metrics: DaemonMetrics = field(default_factory=DaemonMetrics)
    tick_grace: float = TICK_GRACE_SECONDS
    retire_grace: float = RETIRE_GRACE_SECONDS
    flush_grace: float = FLUSH_GRACE_SECONDS
    stall_grace: float = STALL_GRACE_SECONDS
    behind_seconds: float = BEHIND_SECONDS
    api_token: str | None = None
    scheduler: Scheduler = field(default_factory=Scheduler)
    live: LiveHub = field(default_factory=LiveHub)
    """Canary changes for the event stream and the dashboard (docs/api.md, "Live updates")."""
    api_refused: RefusedCount | None = None
    """Connections the API closed at its cap (set once it listens)."""
    journal: RollbackJournal | None = None
    """Rollbacks written before they are sent (None: it could not be opened)."""
    lease: Lease | None = None
    """The leader lease when the state is in PostgreSQL (docs/ha.md); None with SQLite."""
    dispatcher: Dispatcher | None = None
    """The outbox's dispatcher (once the loops run)."""
    health: Health = field(init=False)
    supervisor: Supervisor = field(init=False)
    _services: Services | None = field(default=None, init=False)
    _checks: dict[str, tuple[int, dict[str, Any] | None]] = field(default_factory=dict, init=False)
    """The last check record read from the store, by canary, with the runner's version."""

    def __post_init__(self) -> None:
        """Read the API token of the initial config; create the supervisor and health.

        Raises:
            SecretError: the token file cannot be read or is readable by others.
        """
        self.api_token = api_token(self.settings)
        self.health = Health(self)
        self.supervisor = Supervisor(self)

    @property
    def settings(self) -> Settings:
        """The configuration in force."""
        return self.loaded.settings

    @property
    def services(self) -> Services:
        """What the runners share now (built by :meth:`run`, replaced by a reload)."""
        assert self._services is not None, "the daemon is not running"
        return self._services

    @services.setter
    def services(self, services: Services) -> None:
        self._services = services

    def runner(self, key: str) -> CanaryRunner | None:
        """The runner of ``namespace/name``, if configured."""
        return self.runners.get(key)

    def stop(self) -> None:
        """Ask for a graceful stop (what SIGTERM does)."""
        self.supervisor.stop()

    async def reload(self) -> bool:
        """Load the config again and apply it (:meth:`Supervisor.reload`)."""
        return await self.supervisor.reload()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Open the store and the HTTP transport, build the services, and supervise them
        until cancelled, or until :meth:`stop` (or a signal) and a graceful stop.

        Raises:
            StoreError: the state store cannot be opened, or the lease was lost.
            OSError: the API cannot listen on its address.
        """
        store = self._open_store()
        await store.open()
        journalled: dict[str, Entry] = {}
        if not self.settings.postgres:  # SQLite: its filesystem may fill (docs/reliability.md)
            self.journal, journalled = await _open_journal(self.settings.state_path)
        try:
            async with make_transport() as http:
                self.services = self.build_services(self.settings, http, store)
                await self.supervisor.run(store, journalled, task_status)
        finally:
            self.ready = False
            with anyio.CancelScope(shield=True):
                await self.adapters.aclose()
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
        from canaryd.service.store.postgres import PostgresStore

        ha = self.settings.ha
        address = ha.advertise or f"http://{self.settings.listen}"
        self.lease = Lease(self.settings.state, ha.cluster, address, ha.leaseTtl)
        return PostgresStore(self.settings.state, fence=self.lease)

    def rebuild(self) -> tuple[Loaded, Services, str | None]:
        """Load the config file again and build what its runners would share.

        Raises:
            ConfigError: the config is not valid.
            CanarydError: a provider or router cannot be built, or a secret not read.
            ValueError: a provider or router cannot be built.
        """
        loaded = load_config(self.config_path)
        check_queries(loaded.settings)
        token = api_token(loaded.settings)
        services = self.build_services(loaded.settings, self.services.http, self.services.store)
        return loaded, services, token

    def build_services(
        self, settings: Settings, http: HttpTransport, store: StateStore
    ) -> Services:
        """What the runners of ``settings`` share; adapters of unchanged config are kept.

        Providers and routers replaced or removed by a new config are closed a while
        later (:meth:`Supervisor.retire`), once no tick or command can still use them.

        Raises:
            CanarydError: a router cannot be built, or its secret not read.
            ValueError: a provider or router cannot be built.
        """
        with self.adapters.replacing() as rebuild:
            configured = {
                name: cfg
                for name, cfg in settings.providers.items()
                if name not in self.provider_overrides
            }
            built = rebuild.build("provider", configured, self._provider)
            routers = rebuild.build(
                "router", settings.routers, self._router(http), with_secret_files
            )
        self.supervisor.retire(rebuild.retired)
        providers = {
            name: built[name]
            if name in built
            else self.metrics.provider(name, self.provider_overrides[name])
            for name in settings.providers
        }
        return Services(
            settings,
            http,
            providers,
            routers,
            store,
            on_change=self._changed,
            journal=self.journal,
            epoch=self._epoch,
            leading=lambda: self.health.role == "leader",
        )

    def _provider(self, name: str, cfg: ProviderConfig) -> MetricsProvider:
        """A new provider, counted on ``/metrics``."""
        return self.metrics.provider(name, self.provider_factory(cfg))

    def _router(self, http: HttpTransport) -> Callable[[str, RouterConfig], Router]:
        """How a new router is built on ``http``, counted on ``/metrics``."""
        return lambda name, cfg: self.metrics.router(name, self.router_factory(name, cfg, http))

    def new_runner(self, key: str, state: CanaryState) -> CanaryRunner:
        """A runner of the configured canary ``key`` from ``state``, reporting its ticks."""
        spec = self.services.settings.canary(key)
        assert spec is not None
        runner = _Runner(spec, state, self.services)
        runner.on_tick = self.metrics.tick_seconds.observe
        return runner

    def _epoch(self) -> int | None:
        """The lease epoch this replica decides under (None without a lease)."""
        return None if self.lease is None else self.lease.epoch

    def _changed(self, key: str, state: CanaryState) -> None:
        self.metrics.changed(key, state)
        self.live.publish(key)
        self.health.send_status(changed_only=True)

    def forget_check(self, key: str) -> None:
        """Drop the cached last check of ``key`` (a new loop reads it again)."""
        self._checks.pop(key, None)

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


def api_token(settings: Settings) -> str | None:
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
