"""The demo app: a tiny aiohttp service with faults you can inject.

Run as two processes, *primary* (v1) and *canary* (v2)::

    python -m canaryd.demo.app --name canary --version v2 --port 8081 --error-rate 0.1

``GET /`` answers ``"<name> <version>"`` (or a 500, at ``error_rate``) after the
base latency plus any injected latency. ``GET /metrics`` is the Prometheus
exposition that canaryd's built-in ``prometheus`` mesh queries expect once the
app is scraped with ``job="<target>"``:

- ``http_requests_total{code}``: requests to ``/`` by HTTP status;
- ``http_request_duration_seconds_bucket{le}``: their latency, in seconds.

Both series exist from the start (at 0), so an app that gets no traffic yields
``0/0`` in PromQL: no data, exactly what canaryd must treat as a failed check.

Faults change at run time with ``POST /fault`` (``GET /fault`` shows them)::

    {"error_rate": 0.1, "latency_ms": 300, "latency_jitter_ms": 50}
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from dataclasses import asdict, dataclass, fields
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import generate_latest

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0)
"""Latency histogram buckets (seconds): fine below the demo's 200 ms bound."""

BASE_LATENCY_MS = (1.0, 6.0)
"""Every request takes a uniformly random base latency in this range (ms)."""


@dataclass
class Faults:
    """What the app does wrong: share of 5xx, and added latency (fixed + uniform jitter).

    Attributes:
        error_rate: share of requests answered 500 (0..1).
        latency_ms: latency added to every request, in milliseconds.
        latency_jitter_ms: a further uniformly random 0..jitter ms per request.
    """

    error_rate: float = 0.0
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0

    def update(self, changes: dict[str, Any]) -> None:
        """Apply a JSON object of changes.

        Raises:
            ValueError: an unknown key, or a value that is not a number in range.
        """
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown fault(s): {', '.join(unknown)}; known: {sorted(known)}")
        for key, value in changes.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key} must be a number >= 0")
            if key == "error_rate" and value > 1:
                raise ValueError("error_rate must be between 0 and 1")
        for key, value in changes.items():
            setattr(self, key, float(value))

    def delay(self) -> float:
        """Seconds the next request takes (base latency plus faults)."""
        ms = random.uniform(*BASE_LATENCY_MS) + self.latency_ms
        ms += random.uniform(0.0, self.latency_jitter_ms)
        return ms / 1000.0


FAULTS: web.AppKey[Faults] = web.AppKey("faults", Faults)
REGISTRY: web.AppKey[CollectorRegistry] = web.AppKey("registry", CollectorRegistry)


def make_app(name: str, version: str, faults: Faults) -> web.Application:
    """Build the app: ``/``, ``/metrics`` and ``/fault``."""
    registry = CollectorRegistry()
    requests = Counter("http_requests", "Requests to /, by status.", ["code"], registry=registry)
    for code in ("200", "500"):  # present from the start: no traffic reads as 0/0
        requests.labels(code)
    duration = Histogram(
        "http_request_duration_seconds", "Latency of /.", buckets=BUCKETS, registry=registry
    )

    async def index(request: web.Request) -> web.Response:
        started = time.perf_counter()
        await asyncio.sleep(faults.delay())
        failed = random.random() < faults.error_rate
        status = 500 if failed else 200
        requests.labels(str(status)).inc()
        duration.observe(time.perf_counter() - started)
        return web.Response(status=status, text=f"{name} {version}\n")

    app = web.Application()
    app[FAULTS], app[REGISTRY] = faults, registry
    app.router.add_get("/", index)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/fault", get_fault)
    app.router.add_post("/fault", set_fault)
    return app


async def metrics(request: web.Request) -> web.Response:
    """Prometheus exposition of the request counter and latency histogram."""
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def get_fault(request: web.Request) -> web.Response:
    """The faults in force."""
    return web.json_response(asdict(request.app[FAULTS]))


async def set_fault(request: web.Request) -> web.Response:
    """Change faults at run time; answers the faults now in force (400 on a bad body)."""
    try:
        changes = await request.json()
        if not isinstance(changes, dict):
            raise ValueError("body must be a JSON object")
        request.app[FAULTS].update(changes)
    except ValueError as exc:
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(asdict(request.app[FAULTS]))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m canaryd.demo.app", description=__doc__.split("\n")[0]
    )
    p.add_argument("--name", default="primary", help="primary or canary (shown in answers)")
    p.add_argument("--version", default="v1", help="revision it claims to run")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--error-rate", type=float, default=0.0, help="share of 5xx answers (0..1)")
    p.add_argument("--latency-ms", type=float, default=0.0, help="added latency (ms)")
    p.add_argument("--latency-jitter-ms", type=float, default=0.0, help="plus 0..N ms at random")
    return p


def main(argv: list[str] | None = None) -> None:
    """Run one demo app until SIGTERM/SIGINT."""
    args = _parser().parse_args(argv)
    faults = Faults()
    try:
        faults.update(
            {
                "error_rate": args.error_rate,
                "latency_ms": args.latency_ms,
                "latency_jitter_ms": args.latency_jitter_ms,
            }
        )
    except ValueError as exc:
        raise SystemExit(f"canaryd.demo.app: {exc}") from exc
    app = make_app(args.name, args.version, faults)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
