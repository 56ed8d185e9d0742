"""Built-in metrics against real proxies outside Kubernetes: Traefik's file provider, Envoy.

A primary app (no errors) and a canary app (a quarter of its answers are 500)
sit behind the real proxy, which canaryd's router sets to 50/50; a real
Prometheus scrapes the proxy's own metrics (Traefik's ``/metrics``, Envoy's
admin ``/stats/prometheus``); the built-in queries of meshProvider
``traefik-file`` / ``envoy`` must then find the canary's errors and latency.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support import eventually

from canaryd.config.meshqueries import builtin_query
from canaryd.config.models import EnvoyRouter, TraefikRouter
from canaryd.config.templates import render, template_variables
from canaryd.demo import envoyproxy, traefikproxy
from canaryd.demo.infra import find_binary, run_prometheus
from canaryd.demo.parts import find_envoy
from canaryd.demo.procs import free_port, python_module, serving
from canaryd.http import HttpTransport, make_transport
from canaryd.routers import RouteRequest
from canaryd.routers.envoy import EnvoyFileRouter
from canaryd.routers.traefik import TraefikFileRouter

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.anyio]

CANARY_ERROR_RATE = 0.25
REQUESTS = 400
"""Requests sent through the proxy at 50/50: about 200 reach each side."""


def require(path: str | None, what: str) -> str:
    """The binary's path; missing fails under CI=true and skips elsewhere."""
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{what} not found")
        pytest.skip(f"{what} not found")
    return path


async def start_app(stack: contextlib.AsyncExitStack, workdir: Path, name: str, err: float) -> int:
    """Start one demo app (answering 500 at ``err``); return its port."""
    port = free_port()
    argv = python_module(
        "canaryd.demo.app", "--name", name, "--version", name, "--port", str(port),
        "--error-rate", str(err),
    )  # fmt: skip
    ready = f"http://127.0.0.1:{port}/metrics"
    await stack.enter_async_context(serving(name, argv, workdir / f"{name}.log", ready))
    return port


async def query(prometheus: str, mesh: str, metric: str, target: str) -> float:
    """One built-in query of ``mesh`` for ``target`` over 30 s, as a number."""
    variables = template_variables(namespace="demo", name="web", target=target, interval=30.0)
    promql = render(builtin_query(metric, mesh), variables)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{prometheus}/api/v1/query", params={"query": promql}) as resp,
    ):
        result = (await resp.json())["data"]["result"]
    assert len(result) == 1, (promql, result)
    return float(result[0]["value"][1])


PROXIES: dict[str, tuple[Callable[[], str | None], Any, str]] = {
    "traefik-file": (lambda: find_binary("traefik"), traefikproxy.run_traefik, "traefik"),
    "envoy": (find_envoy, envoyproxy.run_envoy, "envoy"),
}


async def route_half(path: Any, session: HttpTransport) -> None:
    """50/50 through canaryd's own router for the proxy."""
    request = RouteRequest("demo/web", "v2", "route", 50, 50, idempotency_key="half")
    if isinstance(path, traefikproxy.TraefikPath):
        await TraefikFileRouter(TraefikRouter.model_validate(path.router), session).apply(request)
    else:
        await EnvoyFileRouter(EnvoyRouter.model_validate(path.router), session).apply(request)


def exporter(path: Any) -> str:
    """``host:port/path`` of the proxy's Prometheus metrics."""
    if isinstance(path, traefikproxy.TraefikPath):
        return f"{path.api.removeprefix('http://')}/metrics"
    return f"{path.admin.removeprefix('http://')}/stats/prometheus"


@contextlib.asynccontextmanager
async def setup(mesh: str, workdir: Path) -> AsyncIterator[tuple[Any, str]]:
    """Apps, the proxy at 50/50 with load sent, and Prometheus scraping the proxy."""
    find, run, name = PROXIES[mesh]
    binary = require(find(), name)
    prometheus = require(find_binary("prometheus"), "prometheus")
    async with contextlib.AsyncExitStack() as stack:
        primary = await start_app(stack, workdir, "primary", 0.0)
        canary = await start_app(stack, workdir, "canary", CANARY_ERROR_RATE)
        path = await stack.enter_async_context(
            run(binary, workdir, primary, canary, canary_down=False)
        )
        prom = await stack.enter_async_context(
            run_prometheus(prometheus, workdir, {name: exporter(path)})
        )
        async with make_transport() as http:
            await route_half(path, http)
        async with aiohttp.ClientSession() as session:
            for _ in range(REQUESTS):
                async with session.get(path.url) as resp:
                    await resp.read()
        yield path, prom.address


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mesh", sorted(PROXIES))
async def test_builtins_see_the_canarys_errors_through_the_proxy(mesh: str, tmp_path: Path) -> None:
    """The mesh's built-ins measure the canary's 5xx share and a latency from the proxy's stats."""
    async with setup(mesh, tmp_path) as (_, prometheus):
        canary = await eventually(
            lambda: query(prometheus, mesh, "request-success-rate", "canary"),
            lambda value: True,
            within=30.0,
            interval=1.0,
        )
        primary = await query(prometheus, mesh, "request-success-rate", "primary")
        duration = await eventually(
            lambda: query(prometheus, mesh, "request-duration", "canary"),
            lambda value: value == value,  # not NaN: the histogram has data
            within=30.0,
            interval=1.0,
        )

    assert 60.0 < canary < 90.0  # about 75 % of the canary's answers are not 5xx
    assert primary == 100.0
    assert 0.0 < duration < 1000.0  # milliseconds; the apps answer in a few ms
