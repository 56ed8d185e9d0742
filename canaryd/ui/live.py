"""Who follows the live stream, and what changed since each last heard.

A client does not queue every change: it holds the set of canaries that
changed since its last write, so a slow reader costs at most one entry per
canary, however busy the daemon is (docs/api.md, "Live updates").
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

MAX_STREAMS = 32
"""Open event streams at most; one more is answered 503."""

HEARTBEAT_SECONDS = 15.0
"""A comment line is sent after this long without a change (proxies close silent streams)."""


@dataclass(eq=False)
class Listener:
    """One open stream: the canaries changed since it last wrote, and its wake-up call."""

    changed: set[str] = field(default_factory=set)
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self) -> list[str]:
        """The changed canaries (sorted), forgotten as they are taken."""
        keys, self.changed = sorted(self.changed), set()
        self.wake.clear()
        return keys


@dataclass(eq=False)
class LiveHub:
    """Fans canary changes out to the open streams; closed once, on shutdown."""

    max_streams: int = MAX_STREAMS
    heartbeat: float = HEARTBEAT_SECONDS
    listeners: set[Listener] = field(default_factory=set)
    closed: bool = False

    def publish(self, key: str) -> None:
        """Tell every stream that canary ``key`` changed (never blocks)."""
        for listener in self.listeners:
            listener.changed.add(key)
            listener.wake.set()

    @property
    def full(self) -> bool:
        """No stream may open: :attr:`max_streams` are open, or the hub is closed."""
        return self.closed or len(self.listeners) >= self.max_streams

    @contextmanager
    def listen(self) -> Iterator[Listener]:
        """Register a stream for the length of the ``with`` block (check :attr:`full` first)."""
        listener = Listener()
        self.listeners.add(listener)
        try:
            yield listener
        finally:
            self.listeners.discard(listener)

    def reopen(self) -> None:
        """Accept streams again (an API started anew for the same daemon)."""
        self.closed = False

    def close(self) -> None:
        """End every stream now and refuse new ones (the daemon is stopping)."""
        self.closed = True
        for listener in self.listeners:
            listener.wake.set()
