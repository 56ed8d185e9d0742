"""canaryd's own trouble at the API: accept errors, a late loop, /readyz behind, the cap."""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from daemons import api_url, running_daemon, write_config
from fdlimits import out_of_file_descriptors
from overload_helpers import UNREACHABLE, readyz_async
from structlog.testing import capture_logs
from support import eventually

from canaryd.service import api as api_module
from canaryd.service import scheduler as scheduler_module
from canaryd.service.limits import AcceptErrors

# --------------------------------------------------------------------------- accept() errors

CONNECT = """
import socket, sys, time
time.sleep(1.0)
held = [socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5) for _ in range(40)]
time.sleep(4.0)
"""


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
@pytest.mark.anyio
async def test_accept_errors_are_logged_once_per_period_without_tracebacks(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """While the daemon is out of descriptors, failing accept()s make one log line, no traceback."""
    config = write_config(
        tmp_path,
        [idle_canary("web")],
        providers={"prom": {"type": "prometheus", "address": UNREACHABLE, "timeout": "1s"}},
        routers={"lb": {"type": "webhook", "url": UNREACHABLE, "timeout": "1s"}},
    )
    host, port = api_url(config).removeprefix("http://").rsplit(":", 1)
    with capture_logs() as logs, caplog.at_level(logging.ERROR):
        async with (
            running_daemon(config),
            await anyio.open_process([sys.executable, "-c", CONNECT, host, port]) as client,
        ):
            with out_of_file_descriptors():
                await anyio.sleep(4.0)  # the client connects meanwhile; accept() fails
            await eventually(lambda: readyz_async(api_url(config)), lambda s: s == 200)
            with anyio.fail_after(15):
                assert await client.wait() == 0
    failed = [e for e in logs if e["event"] == "api.accept_failed"]
    assert len(failed) == 1, failed
    assert failed[0]["error"] == "Too many open files"
    assert [r.getMessage() for r in caplog.records if r.name == "asyncio"] == []
    assert [e for e in logs if e["event"] == "library.log"] == []


@pytest.mark.anyio
async def test_other_loop_errors_go_to_the_handler_accept_errors_replaced() -> None:
    """Only accept() resource errors are rate-limited; the rest reach the previous handler."""
    seen: list[dict[str, Any]] = []
    handler = AcceptErrors(lambda loop, context: seen.append(context), every=60.0)
    loop = asyncio.get_running_loop()
    emfile = OSError(errno.EMFILE, "Too many open files")
    with capture_logs() as logs:
        for _ in range(5):
            handler(
                loop, {"message": "socket.accept() out of system resource", "exception": emfile}
            )
        handler(loop, {"message": "Task exception was never retrieved", "exception": emfile})
    assert [c["message"] for c in seen] == ["Task exception was never retrieved"]
    assert [e["failed"] for e in logs if e["event"] == "api.accept_failed"] == [1]
    assert handler.failed == 4  # counted, to be said in the next line


def idle_canary(name: str) -> dict[str, Any]:
    """A canary whose loop has nothing to do until a rollout starts."""
    analysis = {"interval": "1s", "threshold": 1, "stepWeight": 10, "maxWeight": 50}
    return {"name": name, "namespace": "prod", "router": "lb", "analysis": analysis}


@pytest.mark.anyio
async def test_readyz_says_behind_while_ticks_start_late_then_ready_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A starved event loop makes every tick late: /readyz says behind, then ready once on time."""
    monkeypatch.setattr(scheduler_module, "LAG_WINDOW_SECONDS", 0.5)
    config = write_config(
        tmp_path,
        [
            {
                **idle_canary(f"c{i}"),
                "analysis": {**idle_canary("x")["analysis"], "interval": "0.1s"},
            }
            for i in range(3)
        ],
        providers={"prom": {"type": "prometheus", "address": UNREACHABLE, "timeout": "1s"}},
        routers={"lb": {"type": "webhook", "url": UNREACHABLE, "timeout": "1s"}},
    )
    base = api_url(config)
    loop = asyncio.get_running_loop()
    async with running_daemon(config) as daemon:
        daemon.behind_seconds = 0.3
        await eventually(lambda: readyz_async(base), lambda s: s == 200)
        await anyio.sleep(0.3)  # every loop has ticked: the next ticks are not first ticks
        answers: list[tuple[int, dict[str, Any]]] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, poll_readyz, base, answers)
            for _ in range(5):  # starved: stuck 0.6 s out of every 0.65 s
                loop.call_soon(time.sleep, 0.6)
                await anyio.sleep(0.05)
            daemon.health.check_schedule()
            status = daemon.health.status_line()
        behind = [body for code, body in answers if code == 503]
        assert behind, answers
        assert behind[0]["status"] == "behind" and behind[0]["lagSeconds"] > 0.3
        assert behind[0]["error"].startswith("behind schedule by ")
        assert "; behind schedule by " in status
        await eventually(lambda: readyz_async(base), lambda s: s == 200, within=5)


def poll_readyz(base: str, answers: list[tuple[int, dict[str, Any]]]) -> None:
    """``GET /readyz`` from a thread until it says behind (5 s at most)."""
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/readyz", timeout=5) as resp:
                answers.append((resp.status, json.loads(resp.read())))
        except urllib.error.HTTPError as exc:
            answers.append((exc.code, json.loads(exc.read())))
            return
        time.sleep(0.1)


@pytest.mark.anyio
async def test_scheduler_behind_is_logged_once_a_minute_even_when_the_lag_flaps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lag flapping around the line logs one scheduler.behind and one caught_up a minute."""
    config = write_config(
        tmp_path,
        [idle_canary("web")],
        providers={"prom": {"type": "prometheus", "address": UNREACHABLE, "timeout": "1s"}},
        routers={"lb": {"type": "webhook", "url": UNREACHABLE, "timeout": "1s"}},
    )
    lags = iter([2.0, 0.0, 3.0, 0.0, 2.5, 0.0])
    with capture_logs() as logs:
        async with running_daemon(config) as daemon:
            monkeypatch.setattr(daemon.health, "schedule_lag", lambda: next(lags))
            statuses = []
            for _ in range(6):
                daemon.health.check_schedule()
                statuses.append(daemon.health.status_line())
    said = [e["event"] for e in logs if e["event"].startswith("scheduler.")]
    assert said == ["scheduler.behind", "scheduler.caught_up"]
    assert ["behind schedule" in line for line in statuses] == [True, False] * 3


async def closed_by_peer(stream: anyio.abc.SocketStream) -> bool:
    """Wait (2 s at most) for the daemon to close or reset ``stream``; True when it did."""
    with anyio.move_on_after(2.0):
        try:
            await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return True
    return False


@pytest.mark.anyio
async def test_api_connections_beyond_the_cap_are_reset_and_silent_ones_closed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connection past the cap is reset on arrival; one with no complete request is closed."""
    monkeypatch.setattr(api_module, "api_connection_cap", lambda providers: 3)
    monkeypatch.setattr(api_module, "IDLE_SECONDS", 1.0)
    config = write_config(
        tmp_path,
        [idle_canary("web")],
        providers={"prom": {"type": "prometheus", "address": UNREACHABLE, "timeout": "1s"}},
        routers={"lb": {"type": "webhook", "url": UNREACHABLE, "timeout": "1s"}},
    )
    base = api_url(config)
    host, port = base.removeprefix("http://").rsplit(":", 1)
    async with running_daemon(config) as daemon:
        held = [await anyio.connect_tcp(host, int(port)) for _ in range(3)]
        await anyio.sleep(0.1)
        extra = await anyio.connect_tcp(host, int(port))
        assert await closed_by_peer(extra), "a fourth connection was kept"
        assert daemon.api_refused is not None and daemon.api_refused.total == 1
        await held[0].send(b"GET /readyz HTTP/1.1\r\nHost: x\r\n")  # headers, never ended
        started = time.monotonic()
        for stream in held:
            assert await closed_by_peer(stream), "a silent connection stayed open"
        assert time.monotonic() - started < 2.5
        assert await readyz_async(base) == 200  # the slots are free again
        for stream in (*held, extra):
            await stream.aclose()
