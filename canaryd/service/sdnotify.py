"""The systemd notify protocol (``sd_notify(3)``), written by hand.

systemd passes ``NOTIFY_SOCKET`` (a filesystem path, or ``@name`` for the
abstract namespace) to a ``Type=notify`` service; the service sends datagrams
of newline-separated ``KEY=VALUE`` lines to it: ``READY=1``, ``RELOADING=1``
with ``MONOTONIC_USEC=``, ``STOPPING=1``, ``STATUS=...`` and ``WATCHDOG=1``.
``WATCHDOG_USEC`` (with ``WATCHDOG_PID``) says how often systemd expects
``WATCHDOG=1``; the convention is to send it at half that period.

Outside systemd (no ``NOTIFY_SOCKET``) every call does nothing. A send that
fails is logged once and never raises: the daemon must not stop because its
supervisor is unreachable.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

import structlog

log = structlog.get_logger()


def socket_address(value: str) -> str:
    """The ``AF_UNIX`` address of a ``NOTIFY_SOCKET`` value (``@x`` is abstract: ``\\0x``)."""
    return "\0" + value[1:] if value.startswith("@") else value


def monotonic_usec() -> int:
    """``CLOCK_MONOTONIC`` in microseconds, as ``RELOADING=1`` wants in ``MONOTONIC_USEC``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


def watchdog_period(environ: Mapping[str, str] | None = None) -> float | None:
    """How often systemd expects ``WATCHDOG=1``, in seconds, or None when it does not.

    ``WATCHDOG_PID``, when set, must be this process (the variable may be inherited).
    """
    env = os.environ if environ is None else environ
    usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 1_000_000


class Notifier:
    """Sends state changes to systemd's notify socket (a no-op without one).

    Args:
        address: the ``NOTIFY_SOCKET`` value, or None outside systemd.
    """

    def __init__(self, address: str | None) -> None:
        self.address = address or None
        self._warned = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Notifier:
        """The notifier of ``NOTIFY_SOCKET`` in ``environ`` (default ``os.environ``)."""
        env = os.environ if environ is None else environ
        return cls(env.get("NOTIFY_SOCKET"))

    @property
    def enabled(self) -> bool:
        """Whether there is a socket to notify."""
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; return whether it was sent."""
        if self.address is None or not lines:
            return False
        payload = "\n".join(line.replace("\n", " ") for line in lines).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)  # a full queue must not block the event loop
                sock.sendto(payload, socket_address(self.address))
        except OSError as exc:
            if not self._warned:
                log.warning("sdnotify.failed", socket=self.address, error=str(exc))
                self._warned = True
            return False
        return True

    def ready(self, status: str) -> bool:
        """``READY=1``: startup (or a reload) is complete."""
        return self.send("READY=1", f"STATUS={status}")

    def reloading(self) -> bool:
        """``RELOADING=1``: a configuration reload begins."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec()}", "STATUS=reloading")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutdown begins."""
        return self.send("STOPPING=1", "STATUS=stopping")

    def status(self, text: str) -> bool:
        """``STATUS=``: a one-line summary shown by ``systemctl status``."""
        return self.send(f"STATUS={text}")

    def watchdog(self, status: str) -> bool:
        """``WATCHDOG=1``: the service is alive (with a fresh status line)."""
        return self.send("WATCHDOG=1", f"STATUS={status}")
