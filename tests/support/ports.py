"""Ports for test servers, without the bind-and-release race.

- Servers started in-process bind port 0 and report the port they got (aiohttp:
  ``runner.addresses``); they need nothing from here.
- A binary that takes its port on the command line gets one from :func:`free_port` and
  is started through :func:`retry_on_port_clash` (or :func:`start_on_free_port`): when
  another process took the port in between, the start fails with "address already in
  use" and is retried with a new port.
  A context manager that starts a binary is entered through :func:`entered_on_free_port`;
  an object with a ``start()`` method is made and started through
  :func:`started_on_free_port`.
- A test that needs a port where nothing listens (connection refused) uses
  :func:`refused_port`: the port stays bound (not listening) for the test run, so no
  other server can get it.
"""

from __future__ import annotations

import errno
import inspect
import os
import re
import socket
from collections.abc import Awaitable, Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path
from typing import Protocol, TypeVar

T = TypeVar("T")

ATTEMPTS = 5
"""How often a start is tried with a new port before the clash is reported."""

_CLASH = re.compile(r"address already in use|EADDRINUSE|cannot bind", re.IGNORECASE)
_HELD: list[socket.socket] = []  # refused ports, held for the whole test run


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (start with a retry, see above)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refused_port() -> int:
    """A port on 127.0.0.1 that refuses connections for the rest of the test run.

    The port is bound but never listens: connecting gets a refusal, and no other
    server can take it meanwhile.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    _HELD.append(sock)
    return int(sock.getsockname()[1])


def is_port_clash(exc: BaseException) -> bool:
    """Whether ``exc`` says a port was already taken (errno or a server's own words)."""
    if isinstance(exc, BaseExceptionGroup):
        return any(is_port_clash(e) for e in exc.exceptions)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return True
    return bool(_CLASH.search(str(exc)))


def retry_on_port_clash(start: Callable[[], T], *, attempts: int = ATTEMPTS) -> T:
    """Call ``start`` (which picks its own :func:`free_port`) until no port clash.

    Raises:
        Whatever ``start`` raised, at once unless it was a port clash; the last clash
        after ``attempts`` tries.
    """
    for attempt in range(1, attempts + 1):
        try:
            return start()
        except (OSError, RuntimeError) as exc:
            if attempt == attempts or not is_port_clash(exc):
                raise
    raise AssertionError("unreachable")


async def start_on_free_port(
    start: Callable[[int], Awaitable[T] | T], *, attempts: int = ATTEMPTS
) -> T:
    """Call ``start(port)`` with a new :func:`free_port` until no port clash (async or sync)."""
    for attempt in range(1, attempts + 1):
        try:
            result = start(free_port())
            if inspect.isawaitable(result):
                return await result
            return result
        except (OSError, RuntimeError) as exc:
            if attempt == attempts or not is_port_clash(exc):
                raise
    raise AssertionError("unreachable")


@contextmanager
def entered_on_free_port(
    start: Callable[[], AbstractContextManager[T]], *, attempts: int = ATTEMPTS
) -> Iterator[T]:
    """Enter ``start()`` (which picks its own ports), again while entering it clashes.

    Raises:
        Whatever entering raised, at once unless it was a port clash; the last clash
        after ``attempts`` tries.
    """
    for attempt in range(1, attempts + 1):
        with ExitStack() as stack:
            try:
                value = stack.enter_context(start())
            except (OSError, RuntimeError) as exc:
                if attempt == attempts or not is_port_clash(exc):
                    raise
                continue
            yield value
            return


class Startable(Protocol):
    """A server object whose ``start()`` binds the ports it picked when it was made."""

    def start(self) -> None:
        """Start the server; raise with its output (a clash included) when it fails."""


S = TypeVar("S", bound=Startable)


def started_on_free_port(
    make: Callable[[Path], S], directory: Path, *, attempts: int = ATTEMPTS
) -> S:
    """``make(dir)`` a server (it picks its :func:`free_port`\\ s) and start it; again on a clash.

    The first attempt gets ``directory``; a retry gets a new subdirectory of it, since
    the server writes its config files where it is made.

    Raises:
        Whatever ``start()`` raised, at once unless it was a port clash; the last clash
        after ``attempts`` tries.
    """
    for attempt in range(1, attempts + 1):
        where = directory if attempt == 1 else directory / f"port-retry-{attempt}"
        where.mkdir(exist_ok=True)
        server = make(where)
        try:
            server.start()
        except (OSError, RuntimeError) as exc:
            if attempt == attempts or not is_port_clash(exc):
                raise
            continue
        return server
    raise AssertionError("unreachable")


def listening(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a socket listening on TCP 127.0.0.1:``port`` (Linux /proc).

    Unlike connecting, looking does not disturb the server; unlike a bind test, a
    listener of another process on that port does not count.
    """
    wanted = f"0100007F:{port:04X}"
    inodes = set()
    with open("/proc/net/tcp") as table:
        for line in table.readlines()[1:]:
            fields = line.split()
            if fields[1] == wanted and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    if not inodes:
        return False
    fds = Path(f"/proc/{pid}/fd")
    try:
        links = {os.readlink(fd) for fd in fds.iterdir()}
    except OSError:  # it exited meanwhile
        return False
    return bool(inodes & links)
