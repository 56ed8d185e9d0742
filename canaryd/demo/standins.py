"""In-process stand-ins for HAProxy and Prometheus, used only where they are missing.

- :class:`Splitter` replaces HAProxy: a weighted HTTP proxy in front of the two
  apps. canaryd drives it through its generic ``webhook`` router, which POSTs
  ``{"action", "primaryWeight", "canaryWeight", ...}`` to ``/-/routes``.
- :class:`AppMetricsReader` replaces Prometheus: it reads the apps' ``/metrics``
  every second and answers the two built-in ``prometheus``-mesh queries of
  :mod:`canaryd.config.meshqueries` (success rate and p99 latency over the query's
  ``[range]``). It implements :class:`~canaryd.providers.MetricsProvider`; any
  other query is a :class:`~canaryd.errors.ProviderError`.

Both are clearly labelled as stand-ins wherever the demo shows what it runs.
"""

from __future__ import annotations

import contextlib
import math
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import anyio
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from canaryd.durations import parse_duration
from canaryd.errors import ProviderError

PROXY_TIMEOUT = 10.0
"""Seconds the splitter waits for an app's answer."""

SCRAPE_INTERVAL = 1.0
"""Seconds between two reads of the apps' ``/metrics``."""

SCRAPE_TIMEOUT = 1.0
"""Timeout of one read of an app's ``/metrics``."""

KEEP_SECONDS = 300.0
"""How much history the reader keeps per app."""

_JOB = re.compile(r'job="([^"]+)"')
_RANGE = re.compile(r"\[([0-9a-z.]+)\]")


# --------------------------------------------------------------------------- splitter


@dataclass
class Splitter:
    """A weighted proxy: each request goes to the canary with probability canary/100.

    Attributes:
        primary: base URL of the primary app.
        canary: base URL of the canary app.
        canary_down: the canary gets nothing whatever its weight (maintenance).
        primary_weight: percent of requests for the primary.
        canary_weight: percent for the canary.
    """

    primary: str
    canary: str
    canary_down: bool = False
    primary_weight: int = 100
    canary_weight: int = 0
    label: str = "[stand-in] in-process weighted splitter (HAProxy not installed)"
    scale: int = 100
    promotes: bool = True
    url: str = ""
    control: str = ""

    @property
    def router(self) -> dict[str, Any]:
        """canaryd's router config entry: the generic webhook router aimed at /-/routes."""
        return {"type": "webhook", "url": self.control, "timeout": "2s"}

    async def weights(self) -> tuple[int, int]:
        """(primary, canary) weights in force."""
        return self.primary_weight, self.canary_weight

    def pick(self) -> str:
        """The base URL the next request goes to."""
        if self.canary_down or random.uniform(0, 100) >= self.canary_weight:
            return self.primary
        return self.canary

    async def _routes(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            primary, canary = int(body["primaryWeight"]), int(body["canaryWeight"])
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"error": f"bad route request: {exc}"}, status=400)
        if body.get("action") == "rollback":
            primary, canary = 100, 0
        if body.get("action") == "promote":
            self.primary = self.canary  # like HAProxy's router: the primary now runs v2
        self.primary_weight, self.canary_weight = primary, canary
        return web.json_response({"primaryWeight": primary, "canaryWeight": canary})

    async def _proxy(self, request: web.Request) -> web.Response:
        session: aiohttp.ClientSession = request.app[_SESSION]
        try:
            async with session.get(self.pick() + request.path_qs) as resp:
                return web.Response(status=resp.status, body=await resp.read())
        except (aiohttp.ClientError, TimeoutError) as exc:
            return web.Response(status=502, text=f"splitter: {exc or 'timeout'}\n")


_SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


@contextlib.asynccontextmanager
async def run_splitter(splitter: Splitter, port: int) -> AsyncIterator[Splitter]:
    """Serve the splitter on 127.0.0.1:``port`` until the block ends."""
    timeout = aiohttp.ClientTimeout(total=PROXY_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        app = web.Application()
        app[_SESSION] = session
        app.router.add_post("/-/routes", splitter._routes)
        app.router.add_route("*", "/{tail:.*}", splitter._proxy)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, "127.0.0.1", port).start()
            port = runner.addresses[0][1]
            splitter.url = f"http://127.0.0.1:{port}/"
            splitter.control = f"http://127.0.0.1:{port}/-/routes"
            yield splitter
        finally:
            with anyio.CancelScope(shield=True):
                await runner.cleanup()


# --------------------------------------------------------------------------- metrics reader


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One read of an app's counters: requests by status code, cumulative latency buckets."""

    time: float
    codes: Mapping[str, float]
    buckets: Mapping[float, float]


def parse_exposition(text: str, now: float) -> Snapshot:
    """Pick the demo app's request counter and latency histogram out of an exposition."""
    codes: dict[str, float] = {}
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "http_requests_total":
                code = sample.labels.get("code", "")
                codes[code] = codes.get(code, 0.0) + sample.value
            elif sample.name == "http_request_duration_seconds_bucket":
                le = float(sample.labels["le"])
                buckets[le] = buckets.get(le, 0.0) + sample.value
    return Snapshot(now, codes, buckets)


def success_rate(old: Snapshot, new: Snapshot) -> float | None:
    """Percent of non-5xx requests between two snapshots; None without requests."""
    delta = {c: new.codes.get(c, 0.0) - old.codes.get(c, 0.0) for c in new.codes}
    total = sum(delta.values())
    if total <= 0:
        return None
    bad = sum(v for c, v in delta.items() if c.startswith("5"))
    return (total - bad) / total * 100


def quantile_ms(q: float, old: Snapshot, new: Snapshot) -> float | None:
    """``histogram_quantile(q, ...)`` in ms between two snapshots; None without requests.

    Linear interpolation inside the bucket holding the rank, as Prometheus does.
    """
    bounds = sorted(new.buckets)
    counts = [new.buckets[b] - old.buckets.get(b, 0.0) for b in bounds]
    if not counts or counts[-1] <= 0:
        return None
    rank = q * counts[-1]
    lower, below = 0.0, 0.0
    for bound, count in zip(bounds, counts, strict=True):
        if count >= rank:
            if math.isinf(bound):
                return lower * 1000
            share = (rank - below) / (count - below) if count > below else 1.0
            return (lower + (bound - lower) * share) * 1000
        lower, below = bound, count
    return None


@dataclass
class AppMetricsReader:
    """A :class:`~canaryd.providers.MetricsProvider` reading the demo apps directly.

    Attributes:
        targets: job name -> ``/metrics`` URL of that app.
    """

    targets: Mapping[str, str]
    label: str = "[stand-in] in-process reader of the apps' /metrics (Prometheus not installed)"
    history: dict[str, deque[Snapshot]] = field(default_factory=dict)

    @property
    def override(self) -> AppMetricsReader:
        """The provider canaryd uses instead of a Prometheus."""
        return self

    async def run(self) -> None:
        """Read every app's ``/metrics`` each :data:`SCRAPE_INTERVAL` until cancelled."""
        timeout = aiohttp.ClientTimeout(total=SCRAPE_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                for job, url in self.targets.items():
                    await self.scrape(session, job, url)
                await anyio.sleep(SCRAPE_INTERVAL)

    async def scrape(self, session: aiohttp.ClientSession, job: str, url: str) -> None:
        """Read one app once; a failed read is skipped (a gap, as in Prometheus)."""
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
            async with session.get(url) as resp:
                snap = parse_exposition(await resp.text(), time.time())
            keep = self.history.setdefault(job, deque())
            keep.append(snap)
            while keep and keep[0].time < snap.time - KEEP_SECONDS:
                keep.popleft()

    async def query(self, query: str, *, budget: float) -> float | None:
        """Answer a built-in ``prometheus``-mesh query from the snapshots.

        Raises:
            ProviderError: the query is not one of the two built-ins.
        """
        job, window = _JOB.search(query), _RANGE.search(query)
        if job is None or window is None:
            raise ProviderError(f"stand-in metrics reader cannot answer {query[:80]!r}")
        pair = self._window(job.group(1), parse_duration(window.group(1)))
        if pair is None:
            return None
        if "http_request_duration_seconds_bucket" in query:
            return quantile_ms(0.99, *pair)
        if "http_requests_total" in query:
            return success_rate(*pair)
        raise ProviderError(f"stand-in metrics reader cannot answer {query[:80]!r}")

    async def query_range(
        self, query: str, *, start: float, end: float, step: float, budget: float
    ) -> list[float]:
        """Not offered by the stand-in.

        Raises:
            ProviderError: always.
        """
        raise ProviderError("the stand-in metrics reader has no range queries")

    def _window(self, job: str, seconds: float) -> tuple[Snapshot, Snapshot] | None:
        snaps = self.history.get(job)
        if not snaps or len(snaps) < 2:
            return None
        newest = snaps[-1]
        oldest = next((s for s in snaps if s.time >= newest.time - seconds), snaps[0])
        return (oldest, newest) if oldest is not newest else None

    async def aclose(self) -> None:
        """Nothing to release."""
