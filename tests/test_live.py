"""The live event stream (``/api/v1/events/stream``) and the dashboard's files under ``/ui/``."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from daemons import TOKEN, api_url
from service_helpers import backends, canary, service_config
from support import eventually

from canaryd.config.loader import load_config
from canaryd.service.api import SHUTDOWN_SECONDS
from canaryd.service.daemon import Daemon
from canaryd.ui import LiveHub

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {TOKEN}"}
STREAM = "/api/v1/events/stream"


class Live:
    """A daemon run in-process by the test (so the test can stop it) and its URL."""

    def __init__(self, daemon: Daemon, url: str, tg: anyio.abc.TaskGroup) -> None:
        self.daemon, self.url, self.tg = daemon, url, tg
        self.stopped = anyio.Event()

    async def run(self, *, task_status: anyio.abc.TaskStatus[None]) -> None:
        """Run the daemon; note when it has returned."""
        try:
            await self.daemon.run(task_status=task_status)
        finally:
            self.stopped.set()


@pytest.fixture
async def live(tmp_path: Path) -> AsyncIterator[Live]:
    """A daemon with canary ``prod/web`` (interval 1h: it changes only when told)."""
    async with backends() as (prom, router):
        cfg = service_config(tmp_path, prom, router, [canary(interval="1h")])
        daemon = Daemon(cfg, load_config(cfg))
        async with anyio.create_task_group() as tg:
            node = Live(daemon, api_url(cfg), tg)
            with anyio.fail_after(15):
                await tg.start(node.run)
            yield node
            tg.cancel_scope.cancel()


async def events(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, Any]]:
    """The server-sent events of a response as (name, data); comments as ("comment", text)."""
    name, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            yield "comment", line[1:].strip()
        elif line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif not line and data:
            yield name, json.loads(data)
            name, data = "message", ""


async def test_stream_says_hello_then_each_change(live: Live) -> None:
    """A stream opens with ``hello``; starting a rollout sends a ``canary`` event with it."""
    async with aiohttp.ClientSession() as s, s.get(live.url + STREAM, headers=AUTH) as r:
        assert (r.status, r.content_type) == (200, "text/event-stream")
        stream = events(r)
        with anyio.fail_after(10):
            assert (await anext(stream))[0] == "hello"
            await s.post(
                live.url + "/api/v1/canaries/prod/web/rollouts",
                json={"revision": "v7"},
                headers=AUTH,
            )
            name, data = await anext(stream)
    assert (name, data["namespace"], data["name"], data["revision"]) == (
        "canary",
        "prod",
        "web",
        "v7",
    )


async def test_stream_needs_the_token(live: Live) -> None:
    """Reads need the token here, so a stream without it is refused with 401."""
    async with aiohttp.ClientSession() as s, s.get(live.url + STREAM) as r:
        assert r.status == 401


async def test_stream_sends_heartbeats_when_nothing_changes(live: Live) -> None:
    """A quiet stream still carries a comment line every ``heartbeat`` seconds."""
    live.daemon.live.heartbeat = 0.1
    async with aiohttp.ClientSession() as s, s.get(live.url + STREAM, headers=AUTH) as r:
        stream = events(r)
        with anyio.fail_after(5):
            assert (await anext(stream))[0] == "hello"
            assert await anext(stream) == ("comment", "heartbeat")


async def test_streams_are_bounded(live: Live) -> None:
    """Beyond ``max_streams`` open streams, one more is answered 503 (JSON), the others go on."""
    live.daemon.live.max_streams = 1
    async with aiohttp.ClientSession() as s, s.get(live.url + STREAM, headers=AUTH) as first:
        assert first.status == 200
        async with s.get(live.url + STREAM, headers=AUTH) as second:
            assert (second.status, set(await second.json())) == (503, {"error"})
        assert len(live.daemon.live.listeners) == 1


@pytest.mark.slow
async def test_a_reader_that_leaves_frees_its_place_before_the_heartbeat(live: Live) -> None:
    """A stream whose reader disconnected is dropped within seconds, though nothing is written."""
    assert live.daemon.live.heartbeat >= 15
    async with aiohttp.ClientSession() as s, s.get(live.url + STREAM, headers=AUTH) as r:
        with anyio.fail_after(5):
            assert (await anext(events(r)))[0] == "hello"
        assert len(live.daemon.live.listeners) == 1
    await eventually(lambda: not live.daemon.live.listeners, within=5, what="stream dropped")


async def test_graceful_stop_does_not_wait_for_open_streams(live: Live) -> None:
    """Stopping the daemon ends open streams at once instead of waiting out the shutdown grace."""
    async with aiohttp.ClientSession() as s, s.get(live.url + STREAM, headers=AUTH) as r:
        stream = events(r)
        with anyio.fail_after(5):
            assert (await anext(stream))[0] == "hello"
        started = time.monotonic()
        live.daemon.stop()
        with anyio.fail_after(10):
            await live.stopped.wait()
            async for _ in stream:  # ends: the server closed the stream
                pass
    assert time.monotonic() - started < SHUTDOWN_SECONDS


def test_a_slow_reader_costs_one_entry_per_canary() -> None:
    """However often canaries change, a stream that has not written holds each key once."""
    hub = LiveHub()
    with hub.listen() as listener:
        for i in range(10_000):
            hub.publish(f"prod/c{i % 3}")
        assert listener.take() == ["prod/c0", "prod/c1", "prod/c2"]
        assert listener.take() == []
    assert hub.listeners == set()


async def test_dashboard_page_is_served_without_the_token(live: Live) -> None:
    """``/ui/`` is the page (no token needed to load it) with a strict content security policy."""
    async with aiohttp.ClientSession() as s, s.get(live.url + "/ui/") as r:
        assert r.status == 200 and r.content_type == "text/html"
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert '<script src="app.js"' in await r.text()


@pytest.mark.parametrize(
    ("path", "status", "kind"),
    [
        ("/ui/app.js", 200, "text/javascript"),
        ("/ui/style.css", 200, "text/css"),
        ("/ui/secret.js", 404, "application/json"),
        ("/ui/..%2f..%2fetc%2fpasswd", 404, "application/json"),
    ],
    ids=["script", "styles", "unknown-file", "traversal"],
)
async def test_dashboard_serves_only_its_files(
    live: Live, path: str, status: int, kind: str
) -> None:
    """The page's own files are served with their type; any other path is a JSON 404."""
    async with aiohttp.ClientSession() as s, s.get(live.url + path) as r:
        assert (r.status, r.content_type) == (status, kind)


async def test_ui_without_slash_redirects(live: Live) -> None:
    """``/ui`` redirects to ``/ui/`` (the page's relative links need the slash)."""
    async with aiohttp.ClientSession() as s, s.get(live.url + "/ui", allow_redirects=False) as r:
        assert (r.status, r.headers["Location"]) == (308, "/ui/")
