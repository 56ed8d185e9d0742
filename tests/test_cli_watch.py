"""``canaryd status --watch`` against a real daemon process: piped lines and a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import IO

import anyio.to_thread
import pytest
from daemons import TOKEN, api_url, client_for, daemon_process, wait_for_state
from service_helpers import backends, canary, service_config
from support import eventually

from canaryd.cli.views import Watch

pytestmark = [pytest.mark.anyio, pytest.mark.integration]  # they start processes

CLEAR = "\x1b[H\x1b[2J"
READ_SECONDS = 20.0
"""How long a test waits for the watch to print what it expects."""


@asynccontextmanager
async def running(tmp_path: Path) -> AsyncIterator[str]:
    """A real ``canaryd run`` process with prod/web (interval 1h); yields its URL."""
    async with backends() as (prom, router):
        cfg = service_config(tmp_path, prom, router, [canary(interval="1h")])
        with daemon_process(cfg, tmp_path / "daemon.log"):
            async with client_for(cfg) as client:
                await eventually(lambda: client.get(""), lambda v: True, within=20)  # listening
                await wait_for_state(client, "prod/web", lambda s: s["phase"] == "Initialized")
            yield api_url(cfg)


def _watch(url: str, stdout: int | IO[bytes], stdin: int | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "canaryd", "status", "--watch", "--interval", "0.5"]
    return subprocess.Popen(
        [*argv, "--url", url],
        stdin=stdin,
        stdout=stdout,
        stderr=subprocess.PIPE,
        env={**os.environ, "CANARYD_TOKEN": TOKEN, "CANARYD_TOKEN_FILE": ""},
    )


def _read_until(fd: int, seen: bytearray, done: Callable[[str], bool]) -> str:
    """Read ``fd`` into ``seen`` until ``done(text so far)``; fail after READ_SECONDS."""
    deadline = time.monotonic() + READ_SECONDS
    while not done(seen.decode(errors="replace")):
        left = deadline - time.monotonic()
        assert left > 0, f"not seen within {READ_SECONDS:g}s: {seen.decode(errors='replace')!r}"
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            chunk = os.read(fd, 65536)
            assert chunk, f"output ended: {seen.decode(errors='replace')!r}"
            seen += chunk
    return seen.decode(errors="replace")


def _stop(proc: subprocess.Popen[bytes]) -> tuple[int, str]:
    """Ctrl-C the watch; its exit code and stderr."""
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err.decode(errors="replace")


async def _start_rollout(url: str) -> None:
    proc = await anyio.run_process(
        [sys.executable, "-m", "canaryd", "rollout", "prod/web", "--revision", "v2", "--url", url],
        env={**os.environ, "CANARYD_TOKEN": TOKEN, "CANARYD_TOKEN_FILE": ""},
    )
    assert proc.returncode == 0, proc.stderr


async def test_piped_watch_prints_a_line_per_change_and_ends_on_ctrl_c(tmp_path: Path) -> None:
    """Piped, the watch prints a header once, then a timed line whenever a canary changes;
    Ctrl-C ends it with exit 0 and no traceback."""
    async with running(tmp_path) as url:
        proc = _watch(url, subprocess.PIPE)
        assert proc.stdout is not None
        seen = bytearray()
        fd = proc.stdout.fileno()
        await anyio.to_thread.run_sync(_read_until, fd, seen, lambda t: "Initialized" in t)
        await _start_rollout(url)
        text = await anyio.to_thread.run_sync(_read_until, fd, seen, lambda t: "Progressing" in t)
        code, err = await anyio.to_thread.run_sync(_stop, proc)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["TIME", "CANARY", "PHASE"]
    assert lines[1].split()[1:3] == ["prod/web", "Initialized"]
    assert any(line.split()[1:3] == ["prod/web", "Progressing"] for line in lines[2:])
    assert CLEAR not in text and sum(line.startswith("TIME") for line in lines) == 1
    assert (code, err) == (0, "")


async def test_terminal_watch_redraws_in_place_and_ends_on_ctrl_c(tmp_path: Path) -> None:
    """On a terminal the watch clears and redraws the whole table each refresh; Ctrl-C exits 0."""
    async with running(tmp_path) as url:
        master, slave = pty.openpty()
        try:
            proc = _watch(url, slave, stdin=slave)
            seen = bytearray()
            await anyio.to_thread.run_sync(_read_until, master, seen, lambda t: t.count(CLEAR) >= 2)
            await _start_rollout(url)
            text = await anyio.to_thread.run_sync(
                _read_until, master, seen, lambda t: "Progressing" in t.rsplit(CLEAR, 1)[-1]
            )
            code, err = await anyio.to_thread.run_sync(_stop, proc)
        finally:
            os.close(master)
            os.close(slave)
    frame = text.rsplit(CLEAR, 1)[-1]
    assert "(Ctrl-C to stop)" in frame and "prod/web" in frame
    assert (code, "Traceback" in err) == (0, False)


def test_piped_watch_says_once_that_the_daemon_is_away() -> None:
    """While the daemon is unreachable a pipe gets the problem once, not once per refresh."""
    view = Watch(tty=False, interval=1.0)
    first = view.frame(None, problem="lost contact with canaryd")
    assert first is not None and first.endswith("lost contact with canaryd")
    assert view.frame(None, problem="lost contact with canaryd") is None
