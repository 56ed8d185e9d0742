"""File descriptors: the process limit, the API's share of it, and accept errors.

Anyone who can connect to the API can hold a file descriptor open. Without a
bound, 1,050 idle connections under systemd's default soft limit of 1,024 left
none for the queries to Prometheus and the calls to the router: a healthy
canary's checks failed and its rollback route could not be sent. So
(docs/reliability.md, "File descriptors"):

- at start the soft ``RLIMIT_NOFILE`` is raised towards the hard one
  (:func:`raise_fd_limit`; the systemd unit sets ``LimitNOFILE=``);
- the API holds at most :func:`api_connection_cap` connections: the limit minus
  a reserve for outgoing calls (every provider's pool and the shared session),
  the listen backlog and the daemon's own files; a connection beyond the cap is
  closed as soon as it is accepted, and one that sends no complete request for
  ``IDLE_SECONDS`` is closed (see :mod:`canaryd.api`);
- when ``accept()`` itself fails for want of descriptors or memory, asyncio
  stops accepting for a second; :class:`AcceptErrors` logs that at most once per
  :data:`ACCEPT_LOG_SECONDS` as one line without a traceback, instead of one
  traceback per failed ``accept()``.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from collections.abc import Callable
from typing import Any

import structlog

from canaryd.http import POOL_PER_HOST
from canaryd.providers.transport import OUT_OF_RESOURCES

log = structlog.get_logger()

Handler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]
"""An event loop exception handler."""

FD_WANTED = 65536
"""The soft ``RLIMIT_NOFILE`` canaryd raises itself to, if the hard limit allows."""

MAX_API_CONNECTIONS = 256
"""API connections open at most, whatever the file-descriptor limit."""

MIN_API_CONNECTIONS = 16
"""API connections allowed even when the limit leaves no room for them (with a warning)."""

LISTEN_BACKLOG = 128
"""The API socket's backlog; asyncio accepts up to this many connections in a row."""

FD_MARGIN = 64
"""Descriptors for the daemon's own files: the store, logs, epoll, the notify socket."""

ACCEPT_LOG_SECONDS = 10.0
"""``api.accept_failed`` is logged at most this often."""

REFUSED_LOG_SECONDS = 60.0
"""``api.connection_limit`` is logged at most this often."""


def raise_fd_limit(wanted: int = FD_WANTED) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to ``wanted`` (or the hard limit, if lower).

    Never lowers it. Returns the soft limit in force afterwards.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError) as exc:  # e.g. a sandbox that forbids it
            log.warning("daemon.fd_limit", error=str(exc), soft=soft, hard=hard)
            return soft
        return target
    return soft


def fd_reserve(providers: int) -> int:
    """Descriptors kept for everything but the API's connections.

    Args:
        providers: metrics providers configured (each has a pool of its own).
    """
    return POOL_PER_HOST * (providers + 1) + LISTEN_BACKLOG + FD_MARGIN


def api_connection_cap(providers: int) -> int:
    """How many connections the API may hold open, given the soft ``RLIMIT_NOFILE``.

    Warns (``daemon.fd_limit``) when the limit leaves less than
    :data:`MAX_API_CONNECTIONS` after the reserve.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_API_CONNECTIONS
    room = soft - fd_reserve(providers)
    if room < MAX_API_CONNECTIONS:
        log.warning(
            "daemon.fd_limit",
            soft=soft,
            reserved=fd_reserve(providers),
            api_connections=max(room, MIN_API_CONNECTIONS),
            advice="raise LimitNOFILE= (the shipped unit sets 65536)",
        )
    return max(MIN_API_CONNECTIONS, min(MAX_API_CONNECTIONS, room))


def out_of_resources(exc: BaseException | None) -> bool:
    """Whether ``exc`` or what caused it says this process ran out (fds, memory)."""
    seen = 0
    while exc is not None and seen < 8:  # a short chain: WebhookError <- aiohttp <- OSError
        if isinstance(exc, MemoryError) or (
            isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES
        ):
            return True
        exc, seen = exc.__cause__ or exc.__context__, seen + 1
    return False


class AcceptErrors:
    """An event loop exception handler that rate-limits ``accept()`` resource errors.

    Everything else goes to the handler it replaced (the loop's default if none).
    """

    def __init__(self, inner: Handler | None = None, every: float = ACCEPT_LOG_SECONDS) -> None:
        self.inner = inner
        self.every = every
        self.failed = 0
        """``accept()`` calls that failed since the last line logged."""
        self._last = -math.inf

    def __call__(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Log an ``accept()`` resource error at most every ``every`` s; pass others on."""
        exc = context.get("exception")
        message = str(context.get("message", ""))
        if not (isinstance(exc, OSError) and exc.errno in OUT_OF_RESOURCES and "accept" in message):
            if self.inner is not None:
                self.inner(loop, context)
            else:
                loop.default_exception_handler(context)
            return
        self.failed += 1
        now = time.monotonic()
        if now - self._last < self.every:
            return
        log.error(
            "api.accept_failed",
            error=exc.strerror or str(exc),
            failed=self.failed,
            retry_seconds=1.0,
            advice="raise LimitNOFILE= or find what holds the descriptors",
        )
        self._last, self.failed = now, 0


class RefusedCount:
    """Counts connections closed at the cap; logs ``api.connection_limit`` at most once a minute."""

    def __init__(self, cap: int, every: float = REFUSED_LOG_SECONDS) -> None:
        self.cap = cap
        self.every = every
        self.total = 0
        self._since_log = 0
        self._last = -math.inf

    def refused(self) -> None:
        """One connection was closed because the API holds ``cap`` already."""
        self.total += 1
        self._since_log += 1
        now = time.monotonic()
        if now - self._last >= self.every:
            log.warning("api.connection_limit", cap=self.cap, refused=self._since_log)
            self._last, self._since_log = now, 0
