"""Child processes of the demo: started in their own process group, always stopped.

Every child runs in a new session (``start_new_session``), so a Ctrl-C in the
terminal reaches only the demo, which then stops each child itself: SIGTERM to
the whole group, SIGKILL after :data:`STOP_TIMEOUT`. Stopping is shielded from
cancellation, so it also happens while the demo is being cancelled.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anyio
import anyio.abc

from canaryd.errors import DemoError as DemoError
from canaryd.redact import scrub
from canaryd.terminal import escape

STOP_TIMEOUT = 3.0
"""Seconds a child gets to exit after SIGTERM before its group is killed."""

READY_TIMEOUT = 30.0
"""Seconds a child gets to answer its readiness URL (the wait ends as soon as it does)."""

POLL_INTERVAL = 0.1
"""Seconds between readiness probes."""

PROBE_TIMEOUT = 1.0
"""Timeout of one readiness probe."""


@dataclass
class Child:
    """A running child process.

    Attributes:
        name: what it is, for messages (``prometheus``, ``canary app``...).
        process: the process.
        log: file receiving its stdout and stderr.
    """

    name: str
    process: anyio.abc.Process
    log: Path

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of its output, for error messages (:func:`log_tail`)."""
        return log_tail(self.log, lines)

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after :data:`STOP_TIMEOUT`; never raises."""
        with anyio.CancelScope(shield=True):
            if self.process.returncode is None:
                _signal_group(self.process.pid, signal.SIGTERM)
                with anyio.move_on_after(STOP_TIMEOUT):
                    await self.process.wait()
            _signal_group(self.process.pid, signal.SIGKILL)  # stragglers in the group
            with anyio.move_on_after(STOP_TIMEOUT):
                await self.process.wait()
            await self.process.aclose()


def log_tail(log: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a child's log as they may reach a terminal: secrets
    scrubbed as in canaryd's own log lines, control characters escaped (one line each).

    A child's output is not canaryd's: a proxy or Prometheus may echo a header or a URL
    with credentials, or write escape sequences (docs/reliability.md, "Terminal output").
    """
    try:
        text = log.read_bytes().decode(errors="replace")  # a CR stays, to be escaped
    except OSError:
        return ""
    return "\n".join(escape(scrub(line)) for line in text.rstrip("\n").split("\n")[-lines:])


def _signal_group(pid: int, signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)


@dataclass
class Tracked:
    """Process ids and ports handed out inside a :func:`tracking` block (to prove cleanup).

    Attributes:
        pids: ids of the child processes started.
        ports: ports returned by :func:`free_port`.
    """

    pids: list[int] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)


_TRACKED: contextvars.ContextVar[Tracked | None] = contextvars.ContextVar("tracked", default=None)


@contextlib.contextmanager
def tracking() -> Iterator[Tracked]:
    """Record every child started and port handed out in this block (and its tasks)."""
    tracked = Tracked()
    token = _TRACKED.set(tracked)
    try:
        yield tracked
    finally:
        _TRACKED.reset(token)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    if (tracked := _TRACKED.get()) is not None:
        tracked.ports.append(port)
    return port


def python_module(module: str, *args: str) -> list[str]:
    """``python -m module args...`` with this interpreter."""
    return [sys.executable, "-m", module, *args]


@contextlib.asynccontextmanager
async def child(
    name: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> AsyncIterator[Child]:
    """Start ``argv`` in its own process group; stop it when the block ends.

    ``env`` is added to the demo's own environment.

    Raises:
        DemoError: the program cannot be started.
    """
    with log.open("wb") as out:
        try:
            process = await anyio.open_process(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **env} if env else None,
            )
        except OSError as exc:
            raise DemoError(f"cannot start {name} ({argv[0]}): {exc.strerror}") from exc
    proc = Child(name, process, log)
    if (tracked := _TRACKED.get()) is not None:
        tracked.pids.append(process.pid)
    try:
        yield proc
    finally:
        await proc.stop()


@contextlib.asynccontextmanager
async def serving(
    name: str,
    argv: Sequence[str],
    log: Path,
    ready: str,
    *,
    expect: str = "",
    env: dict[str, str] | None = None,
) -> AsyncIterator[Child]:
    """Start ``argv`` (:func:`child`) and wait until ``ready`` answers (:func:`wait_ready`);
    stop it when the block ends.

    Raises:
        DemoError: the program cannot be started, exited, or was not ready in time.
    """
    async with child(name, argv, log, env) as proc:
        await wait_ready(proc, ready, expect=expect)
        yield proc


async def wait_ready(
    proc: Child, url: str, *, expect: str = "", within: float = READY_TIMEOUT
) -> None:
    """Poll ``url`` until it answers 200 (with ``expect`` in the body, if given).

    Raises:
        DemoError: the process exited, or it was not ready within ``within`` seconds;
            the message carries the end of its log.
    """
    timeout = aiohttp.ClientTimeout(total=PROBE_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        with anyio.move_on_after(within):
            while proc.process.returncode is None:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                    async with session.get(url) as resp:
                        if resp.status == 200 and expect in await resp.text():
                            return
                await anyio.sleep(POLL_INTERVAL)
    code = proc.process.returncode
    what = f"exited with code {code}" if code is not None else f"not ready within {within:g}s"
    raise DemoError(f"{proc.name} {what} ({url}):\n{proc.log_tail()}")
