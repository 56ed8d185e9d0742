"""The daemon: config, store, adapters, one loop per canary, the API, signals.

Everything runs in one task group; shutdown is cancellation of that group.
SIGHUP reloads the config (a bad one is rejected and the last good one kept);
SIGTERM/SIGINT stop the daemon after the ticks in flight.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anyio
import anyio.abc
import structlog

from canaryd.analysis import CanaryState
from canaryd.config import Settings
from canaryd.dispatcher import Dispatcher
from canaryd.errors import CanarydError, ConfigError, TemplateError
from canaryd.http import make_session
from canaryd.loader import Loaded, load_config
from canaryd.providers import MetricsProvider, build_provider
from canaryd.routers import Router, build_router
from canaryd.runtime import CanaryRunner, Services
from canaryd.store import SqliteStore

log = structlog.get_logger()

HOUSEKEEPING_SECONDS = 60.0
"""How often old check records and events are pruned."""


@dataclass
class Daemon:
    """A running canaryd: owns the runners and what they share."""

    config_path: Path
    loaded: Loaded
    runners: dict[str, CanaryRunner] = field(default_factory=dict)
    ready: bool = False
    _scopes: dict[str, anyio.CancelScope] = field(default_factory=dict)

    @property
    def settings(self) -> Settings:
        """The configuration in force."""
        return self.loaded.settings

    def runner(self, key: str) -> CanaryRunner | None:
        """The runner of ``namespace/name``, if configured."""
        return self.runners.get(key)

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until cancelled or signalled to stop.

        Raises:
            StoreError: the state store cannot be opened.
        """
        from canaryd.api import serve

        store = SqliteStore(self.settings.state_path)
        await store.open()
        try:
            async with make_session() as session:
                self.services = self._services(self.settings, session, store)
                states = await store.load_states()
                async with anyio.create_task_group() as tg:
                    self._tg = tg
                    for canary in self.settings.canaries:
                        await self._start_runner(canary.key, states.get(canary.key))
                    await tg.start(serve, self)
                    self.dispatcher = Dispatcher(lambda: self.services, store, time.time)
                    tg.start_soon(self.dispatcher.run)
                    tg.start_soon(self._housekeeping, store)
                    tg.start_soon(self._signals, tg.cancel_scope)
                    self.ready = True
                    log.info(
                        "daemon.started", canaries=len(self.runners), listen=self.settings.listen
                    )
                    task_status.started()
        finally:
            self.ready = False
            with anyio.CancelScope(shield=True):
                await store.close()

    def _services(
        self, settings: Settings, session: aiohttp.ClientSession, store: SqliteStore
    ) -> Services:
        providers: Mapping[str, MetricsProvider] = {
            name: build_provider(cfg, session) for name, cfg in settings.providers.items()
        }
        routers: Mapping[str, Router] = {
            name: build_router(name, cfg, session) for name, cfg in settings.routers.items()
        }
        return Services(settings, session, providers, routers, store)

    async def _start_runner(self, key: str, state: CanaryState | None) -> None:
        spec = self.services.settings.canary(key)
        assert spec is not None
        runner = CanaryRunner(spec, state or CanaryState(), self.services)
        scope = anyio.CancelScope()
        self.runners[key], self._scopes[key] = runner, scope

        async def guarded(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            with scope:
                await runner.run(task_status=task_status)

        await self._tg.start(guarded)

    async def _housekeeping(self, store: SqliteStore) -> None:
        while True:
            await anyio.sleep(HOUSEKEEPING_SECONDS)
            try:
                await store.prune()
            except CanarydError as exc:
                log.error("store.prune_failed", error=str(exc))

    async def _signals(self, scope: anyio.CancelScope) -> None:
        with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            async for signum in sigs:
                if signum == signal.SIGHUP:
                    await self.reload()
                    continue
                log.info("daemon.stopping", signal=signal.Signals(signum).name)
                scope.cancel()
                return

    async def reload(self) -> bool:
        """Load the config again and apply it; keep the last good one on error."""
        try:
            loaded = load_config(self.config_path)
            check_queries(loaded.settings)
            services = self._services(loaded.settings, self.services.session, self.services.store)
        except ConfigError as exc:
            log.error("config.rejected", problems=[str(p) for p in exc.problems])
            return False
        except CanarydError as exc:
            log.error("config.rejected", problems=[str(exc)])
            return False
        old = {c.key for c in self.settings.canaries}
        new = {c.key for c in loaded.settings.canaries}
        self.loaded, self.services = loaded, services
        for key in old - new:
            self._scopes.pop(key).cancel()
            self.runners.pop(key)
        for key in old & new:
            runner = self.runners[key]
            spec = loaded.settings.canary(key)
            assert spec is not None
            runner.services = self.services
            runner.reconfigure(spec, loaded.settings)
        states = await self.services.store.load_states()
        for key in sorted(new - old):
            await self._start_runner(key, states.get(key))
        log.info("config.loaded", canaries=len(self.runners), reloaded=True)
        return True


def check_queries(settings: Settings) -> None:
    """Render every canary's metric queries, as the daemon will.

    Raises:
        ConfigError: a template names an unknown variable or mesh.
    """
    from canaryd.errors import Problem
    from canaryd.runtime import resolve_metrics

    problems = []
    for i, canary in enumerate(settings.canaries):
        try:
            resolve_metrics(settings, canary)
        except TemplateError as exc:
            problems.append(Problem("<config>", 0, 0, f"canaries[{i}].analysis.metrics", str(exc)))
    if problems:
        raise ConfigError(problems)


async def run_daemon(config_path: Path) -> int:
    """``canaryd run``: load the config and run until stopped.

    Returns:
        The process exit code (0 on a clean stop, 1 on a config or store error).
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
    try:
        await Daemon(config_path, loaded).run()
    except CanarydError as exc:
        log.error("daemon.failed", error=str(exc))
        return 1
    return 0
