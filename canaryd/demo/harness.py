"""Run one demo scenario for real: apps, traffic path, metrics, canaryd, load, a rollout.

Everything lives in a temporary directory and on free 127.0.0.1 ports, inside
one :class:`contextlib.AsyncExitStack`: leaving it (normally, on an error or on
Ctrl-C) stops every child process and server in reverse order of starting.

canaryd runs in-process (:class:`~canaryd.service.daemon.Daemon`, signals left to the
demo) with a generated config: the ``prometheus`` mesh's built-in
``request-success-rate`` and ``request-duration`` metrics, the ``haproxy``
router (or the generic ``webhook`` router aimed at the stand-in splitter), and
a ``webhook`` notifier posting every alert to a local receiver. The rollout is
started and followed through canaryd's own HTTP API (:mod:`canaryd.demo.follow`);
the tools and proxies it starts are in :mod:`canaryd.demo.parts`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import yaml

from canaryd.config.loader import load_config
from canaryd.demo import infra
from canaryd.demo.follow import Follow, Rollout
from canaryd.demo.loadgen import LoadStats, generate_load
from canaryd.demo.parts import RUNNERS, Metrics, Tools, Traffic
from canaryd.demo.procs import DemoError, free_port, python_module, serving, tracking
from canaryd.demo.receiver import run_receiver
from canaryd.demo.results import ScenarioResult
from canaryd.demo.scenarios import Scenario, Timings
from canaryd.demo.standins import AppMetricsReader, Splitter, run_splitter
from canaryd.demo.view import View
from canaryd.errors import CanarydError, ConfigError
from canaryd.providers import MetricsProvider
from canaryd.service.daemon import Daemon

NAMESPACE = "demo"


def canaryd_config(
    scenario: Scenario, timings: Timings, workdir: Path, parts: dict[str, Any]
) -> dict[str, Any]:
    """The canaryd configuration of one scenario (``parts``: api, prometheus, router, alerts)."""
    return {
        "listen": f"127.0.0.1:{parts['api_port']}",
        "state": f"sqlite:///{workdir / 'state.db'}",
        "api": {"token_file": str(parts["token_file"])},
        "outbox": {"initialBackoff": "200ms", "pollInterval": "200ms"},
        "meshProvider": "prometheus",
        "providers": {"prom": {"type": "prometheus", "address": parts["prometheus"]}},
        "routers": {"lb": parts["router"]},
        "notifiers": {"receiver": {"type": "webhook", "url": parts["alerts"]}},
        "canaries": [
            {
                "name": scenario.name,
                "namespace": NAMESPACE,
                "target": infra.CANARY_JOB,
                "router": "lb",
                "provider": "prom",
                "analysis": {
                    "interval": f"{timings.interval:g}s",
                    "threshold": timings.threshold,
                    "stepWeight": timings.step_weight,
                    "maxWeight": timings.max_weight,
                    "metrics": _metrics(timings),
                },
                # the demo shows every step, not only the Flagger-default alerts
                "alerts": [
                    {
                        "name": "receiver",
                        "notifier": "receiver",
                        "severity": "info",
                        "events": "all",
                    }
                ],
            }
        ],
    }


def _metrics(timings: Timings) -> list[dict[str, Any]]:
    """The two built-in metrics with the demo's bounds."""
    interval = f"{timings.metric_interval:g}s"
    return [
        {
            "name": "request-success-rate",
            "thresholdRange": {"min": timings.min_success},
            "interval": interval,
        },
        {
            "name": "request-duration",
            "thresholdRange": {"max": timings.max_duration},
            "interval": interval,
        },
    ]


class _Run:
    """One scenario in progress: starts the parts, then follows the rollout."""

    def __init__(
        self, scenario: Scenario, tools: Tools, timings: Timings, workdir: Path, view: View
    ) -> None:
        self.scenario, self.tools, self.timings, self.workdir = scenario, tools, timings, workdir
        self.view = view
        self.key = f"{NAMESPACE}/{scenario.name}"
        self.stack = contextlib.AsyncExitStack()
        self.load = LoadStats()

    async def _apps(self) -> tuple[int, int]:
        s = self.scenario
        faults = {
            "--error-rate": s.error_rate,
            "--latency-ms": s.latency_ms,
            "--latency-jitter-ms": s.latency_jitter_ms,
        }
        return await self._app("primary", "v1", {}), await self._app("canary", "v2", faults)

    async def _app(self, name: str, version: str, faults: dict[str, float]) -> int:
        """Start one demo app and wait until it answers; return its port."""
        port = free_port()
        flags = [str(x) for item in faults.items() for x in item]
        argv = python_module(
            "canaryd.demo.app", "--name", name, "--version", version, "--port", str(port), *flags
        )
        log, ready = self.workdir / f"{name}.log", f"http://127.0.0.1:{port}/metrics"
        await self.stack.enter_async_context(serving(f"{name} app", argv, log, ready))
        return port

    async def _traffic(self, primary: int, canary: int) -> Traffic:
        down = self.scenario.no_traffic
        binary, workdir = self.tools.proxy, self.workdir
        if binary is not None:
            run = RUNNERS[self.tools.router]
            path: Traffic = await self.stack.enter_async_context(
                run(binary, workdir, primary, canary, canary_down=down)
            )
            return path
        splitter = Splitter(f"http://127.0.0.1:{primary}", f"http://127.0.0.1:{canary}", down)
        splitter.label = (
            f"[stand-in] in-process weighted splitter ({self.tools.router} not installed)"
        )
        return await self.stack.enter_async_context(run_splitter(splitter, free_port()))

    async def _metrics(
        self, primary: int, canary: int, traffic: Traffic, tg: anyio.abc.TaskGroup
    ) -> tuple[Metrics, str]:
        jobs = {infra.PRIMARY_JOB: f"127.0.0.1:{primary}", infra.CANARY_JOB: f"127.0.0.1:{canary}"}
        if self.tools.prometheus is None:
            reader = AppMetricsReader({j: f"http://{t}/metrics" for j, t in jobs.items()})
            tg.start_soon(reader.run)
            return reader, "http://127.0.0.1:9"  # never contacted: the reader stands in
        if isinstance(traffic, infra.HAProxyPath):
            jobs["haproxy"] = traffic.exporter
        prom = await self.stack.enter_async_context(
            infra.run_prometheus(self.tools.prometheus, self.workdir, jobs)
        )
        return prom, prom.address

    async def _daemon(
        self, tg: anyio.abc.TaskGroup, parts: dict[str, Any], override: MetricsProvider | None
    ) -> Daemon:
        token = self.workdir / "api-token"
        token.write_text(os.urandom(16).hex())
        token.chmod(0o600)
        parts = {**parts, "api_port": free_port(), "token_file": token}
        path = self.workdir / "canaryd.yaml"
        path.write_text(
            yaml.safe_dump(canaryd_config(self.scenario, self.timings, self.workdir, parts))
        )
        try:
            loaded = load_config(path, environ={})
        except ConfigError as exc:
            raise DemoError("demo config rejected:\n" + "\n".join(map(str, exc.problems))) from exc
        overrides = {"prom": override} if override is not None else {}
        daemon = Daemon(path, loaded, handle_signals=False, provider_overrides=overrides)
        await tg.start(daemon.run)
        self.api, self.token = f"http://{loaded.settings.listen}", token.read_text()
        return daemon

    async def run(self) -> ScenarioResult:
        async with self.stack:
            primary, canary = await self._apps()
            traffic = await self._traffic(primary, canary)
            tg = await self.stack.enter_async_context(anyio.create_task_group())
            self.stack.callback(tg.cancel_scope.cancel)
            metrics, address = await self._metrics(primary, canary, traffic, tg)
            receiver = await self.stack.enter_async_context(run_receiver(free_port()))
            parts = {"prometheus": address, "router": traffic.router, "alerts": receiver.url}
            daemon = await self._daemon(tg, parts, metrics.override)
            tg.start_soon(generate_load, traffic.url, self.timings.rate, self.load)
            result = ScenarioResult(self.scenario, [traffic.label, metrics.label])
            result.scale = traffic.scale
            rollout = Rollout(
                self.key, self.api, self.token, self.scenario, self.timings, self.view
            )
            await Follow(rollout, daemon, traffic, receiver, result).run()
            return result


async def run_scenario(
    scenario: Scenario, tools: Tools, timings: Timings, view: View
) -> ScenarioResult:
    """Run one scenario end to end, showing it on ``view``, and return what happened.

    Raises:
        DemoError: a part could not be started; the message says which and why.
    """
    for attempt in range(1, START_ATTEMPTS + 1):
        with tempfile.TemporaryDirectory(prefix="canaryd-demo-") as workdir, tracking() as tracked:
            try:
                result = await _Run(scenario, tools, timings, Path(workdir), view).run()
                result.pids, result.ports = tracked.pids, tracked.ports
                return result
            except BaseExceptionGroup as group:
                leaves = list(_leaves(group))
                if attempt < START_ATTEMPTS and _port_taken(leaves):
                    continue  # another process took a port between choosing and binding it
                if len(leaves) == 1 and isinstance(leaves[0], CanarydError):
                    raise leaves[0] from None
                raise
    raise AssertionError("unreachable: the last attempt returns or raises")


START_ATTEMPTS = 3
"""A scenario whose port was taken by another process while it started is started again."""


def _port_taken(leaves: list[BaseException]) -> bool:
    return len(leaves) == 1 and (
        isinstance(leaves[0], OSError) and leaves[0].errno == errno.EADDRINUSE
    )


def _leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            yield from _leaves(exc)
        else:
            yield exc
