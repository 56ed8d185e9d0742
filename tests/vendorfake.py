"""The shell of the SaaS API fakes (tests/fake_datadog.py, fake_newrelic.py, fake_dynatrace.py).

Each fake is an aiohttp server on 127.0.0.1 (a free port) answering the
vendor's documented requests with its documented answers, from series the test
puts (``fake.put(query, [(unix_seconds, value), ...])``). Auth is checked the
vendor's way; ``fake.script(...)`` queues canned answers (rate limits, 5xx,
error bodies) served before the computed ones. Every request is recorded.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aiohttp import web
from receiver import Request

from canaryd.config import ProviderConfig
from canaryd.providers import ClosableProvider, build_provider

Points = list[tuple[float, float | None]]


@dataclass
class Canned:
    """One scripted answer: status, JSON body (or raw bytes) and extra headers."""

    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    def response(self) -> web.Response:
        """The aiohttp response."""
        raw = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return web.Response(
            status=self.status,
            body=raw,
            headers={"Content-Type": "application/json", **self.headers},
        )


class VendorFake:
    """Base of the fakes: server lifecycle, recorded requests, scripted answers, series."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.series: dict[str, list[Points]] = {}
        self.scripted: list[Canned] = []
        self._runner: web.AppRunner | None = None
        self._port = 0

    @property
    def url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._port}"

    def put(self, query: str, *series: Points) -> None:
        """Serve these series (one or more) for ``query`` (whitespace-insensitive)."""
        self.series[norm(query)] = [sorted(points, key=lambda p: p[0]) for points in series]

    def put_now(self, query: str, value: float | None) -> None:
        """Serve one point of ``value`` stamped now for ``query``."""
        self.put(query, [(time.time() - 1, value)])

    def script(self, *answers: Canned) -> None:
        """Answer the next requests with these, in order, before computed answers."""
        self.scripted.extend(answers)

    def window(self, query: str, start: float, end: float) -> list[Points]:
        """The series of ``query`` cut to ``[start, end]``; those left without a point dropped."""
        cut = [
            [p for p in points if start <= p[0] <= end]
            for points in self.series.get(norm(query), [])
        ]
        return [points for points in cut if points]

    async def __aenter__(self) -> VendorFake:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        seen = Request(request.method, request.path, request.query_string, request.headers, body)
        self.requests.append(seen)
        denied = self.authorize(seen)
        if denied is not None:
            return denied.response()
        if self.scripted:
            return self.scripted.pop(0).response()
        return self.answer(seen).response()

    def authorize(self, request: Request) -> Canned | None:
        """The vendor's refusal of a request without valid credentials, or ``None``."""
        raise NotImplementedError

    def answer(self, request: Request) -> Canned:
        """The vendor's answer to an authorized request."""
        raise NotImplementedError


def norm(query: str) -> str:
    """A query with its whitespace collapsed (the key of a fake's series)."""
    return " ".join(query.split())


@asynccontextmanager
async def opened(cfg: ProviderConfig) -> AsyncIterator[ClosableProvider]:
    """The provider the factory builds for ``cfg``, closed on exit."""
    provider = build_provider(cfg)
    try:
        yield provider
    finally:
        await provider.aclose()


def secret(folder: Path, name: str, value: str) -> str:
    """A secret file readable by its owner only; returns its path."""
    path = folder / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)
