"""A real HAProxy for tests: two aiohttp backends, a config in a temp dir, a subprocess.

The backends answer every request with their own name (``primary`` / ``canary``),
so a test counts where traffic went. HAProxy runs in the foreground (``-db``),
with an admin stats socket on a unix path and on 127.0.0.1:PORT, a frontend on
127.0.0.1:PORT and ``backend web`` holding ``web-primary`` (weight 256) and
``web-canary`` (weight 0). Everything binds 127.0.0.1 only.

The pytest fixtures live in ``conftest.py`` (``haproxy``); this module holds the
parts that do not depend on pytest.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from support import free_port
from support.procs import stop_process

from canaryd.config import HAProxyRouter

BACKEND = "web"
PRIMARY = "web-primary"
CANARY = "web-canary"

READY_TIMEOUT = 10.0
"""Seconds HAProxy gets to answer ``show info`` after it was started."""

STOP_TIMEOUT = 5.0
"""Seconds HAProxy gets to exit after SIGTERM before it is killed."""

MAX_UNIX_PATH = 100
"""Unix socket paths longer than this (the limit is 108 bytes) go to a short temp dir."""

CONFIG_TEMPLATE = """\
global
    nbthread 1
    stats socket {unix_socket} mode 600 level admin
    stats socket 127.0.0.1:{stats_port} level admin

defaults
    mode http
    timeout connect 2s
    timeout client 10s
    timeout server 10s

frontend fe
    bind 127.0.0.1:{frontend_port}
    default_backend {backend}

backend {backend}
    balance roundrobin
    server {primary} 127.0.0.1:{primary_port} weight 256
    server {canary} 127.0.0.1:{canary_port} weight 0
"""


@dataclass(frozen=True, slots=True)
class HAProxyInstance:
    """A running HAProxy, as a test sees it.

    Attributes:
        unix_socket: path of the admin stats socket.
        tcp_socket: ``127.0.0.1:PORT`` of the admin stats socket over TCP.
        url: the frontend, ``http://127.0.0.1:PORT/``.
        config: path of the generated ``haproxy.cfg``.
        backend: backend name (``web``).
        primary: primary server name (``web-primary``).
        canary: canary server name (``web-canary``).
    """

    unix_socket: Path
    tcp_socket: str
    url: str
    config: Path
    backend: str = BACKEND
    primary: str = PRIMARY
    canary: str = CANARY

    def router_config(self, *, tcp: bool = False, timeout: float = 2.0) -> HAProxyRouter:
        """An ``haproxy`` router config entry pointing at this instance."""
        return HAProxyRouter(
            type="haproxy",
            socket=self.tcp_socket if tcp else str(self.unix_socket),
            backend=self.backend,
            primary=self.primary,
            canary=self.canary,
            timeout=timeout,
        )

    def command(self, line: str) -> str:
        """Run one runtime-API command over the unix socket (independent of canaryd's client)."""
        return runtime_command(self.unix_socket, line)


def find_haproxy() -> str | None:
    """Path of the haproxy binary (``$HAPROXY``, ``PATH``, ``/usr/sbin``), or None."""
    candidates = [os.environ.get("HAPROXY"), shutil.which("haproxy"), "/usr/sbin/haproxy"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def short_socket_dir(preferred: Path) -> Path:
    """``preferred`` unless a socket path in it would exceed the unix path limit."""
    if len(str(preferred / "admin.sock")) <= MAX_UNIX_PATH:
        return preferred
    return Path(tempfile.mkdtemp(prefix="hx-"))


def runtime_command(path: Path, line: str, timeout: float = 2.0) -> str:
    """Send one command to a unix stats socket and return the whole answer.

    Raises:
        OSError: the socket cannot be reached or does not answer in time.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(line.encode() + b"\n")
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()


def write_config(directory: Path, *, primary_port: int, canary_port: int) -> HAProxyInstance:
    """Write ``haproxy.cfg`` into ``directory`` (ports for frontend and TCP socket are picked)."""
    unix_socket = short_socket_dir(directory) / "admin.sock"
    stats_port, frontend_port = free_port(), free_port()
    config = directory / "haproxy.cfg"
    config.write_text(
        CONFIG_TEMPLATE.format(
            unix_socket=unix_socket,
            stats_port=stats_port,
            frontend_port=frontend_port,
            backend=BACKEND,
            primary=PRIMARY,
            canary=CANARY,
            primary_port=primary_port,
            canary_port=canary_port,
        ),
        encoding="utf-8",
    )
    return HAProxyInstance(
        unix_socket=unix_socket,
        tcp_socket=f"127.0.0.1:{stats_port}",
        url=f"http://127.0.0.1:{frontend_port}/",
        config=config,
    )


def wait_ready(proc: subprocess.Popen[bytes], instance: HAProxyInstance, log: Path) -> None:
    """Block until the unix socket answers ``show info`` (bounded by :data:`READY_TIMEOUT`).

    Raises:
        RuntimeError: HAProxy exited, or did not answer in time; the message has its output.
    """
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"haproxy exited with {proc.returncode}:\n{log.read_text()}")
        try:
            if instance.command("show info").startswith("Name: HAProxy"):
                return
        except OSError:
            pass  # not listening yet
        time.sleep(0.05)
    raise RuntimeError(f"haproxy not ready within {READY_TIMEOUT:g}s:\n{log.read_text()}")


@contextmanager
def run_haproxy(binary: str, instance: HAProxyInstance) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``haproxy -f <config> -db`` until the block ends (terminate, then kill).

    Raises:
        RuntimeError: HAProxy did not start (see :func:`wait_ready`).
    """
    log = instance.config.with_name("haproxy.log")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [binary, "-f", str(instance.config), "-db"], stdout=out, stderr=subprocess.STDOUT
        )
        try:
            wait_ready(proc, instance, log)
            yield proc
        finally:
            stop_process(proc, STOP_TIMEOUT)


@asynccontextmanager
async def named_backend(name: str) -> AsyncIterator[int]:
    """Serve ``name`` as the body of every response on 127.0.0.1; yield the port."""

    async def answer_with_name(request: web.Request) -> web.Response:
        return web.Response(text=name)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer_with_name)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()


async def count_responses(url: str, requests: int) -> Counter[str]:
    """Send ``requests`` GETs, each on a new connection, and count the bodies."""
    counts: Counter[str] = Counter()
    connector = aiohttp.TCPConnector(force_close=True)
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        for _ in range(requests):
            async with session.get(url) as resp:
                counts[await resp.text()] += 1
    return counts
