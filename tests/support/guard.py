"""Keeps ``make unit`` fast: a unit test that starts a process fails.

A test that starts a process (a real server, the daemon, ``python -c``) belongs under the
``integration`` or ``slow`` marker, which ``make unit`` leaves out. The guard is a
:func:`sys.addaudithook` hook: Python raises the ``subprocess.Popen``, ``os.posix_spawn``,
``os.fork`` and ``os.system`` audit events before any process starts, in every thread.
While a unit test runs (its set-up, call and tear-down), such an event is refused with
:class:`ProcessInUnitTestError` and remembered, so that a test which swallows the error still
fails afterwards.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

SPAWN_EVENTS = frozenset({"subprocess.Popen", "os.posix_spawn", "os.fork", "os.system"})
"""Audit events raised just before Python starts a process."""


class ProcessInUnitTestError(RuntimeError):
    """A unit test (neither ``integration`` nor ``slow``) tried to start a process."""


class SpawnGuard:
    """Refuses processes while :meth:`unit_test` is active; installed once per session."""

    def __init__(self, events: frozenset[str] = SPAWN_EVENTS) -> None:
        """Install the audit hook; it watches ``events`` (tests of the guard pass their own)."""
        self._events = events
        self._test: str | None = None
        self.refused: list[str] = []
        sys.addaudithook(self._audit)

    def _audit(self, event: str, args: tuple[object, ...]) -> None:
        if self._test is None or event not in self._events:
            return
        what = f"{event} {args[1] if event == 'subprocess.Popen' else args[:1]!r}"[:200]
        self.refused.append(what)
        raise ProcessInUnitTestError(
            f"{self._test} started a process ({what}): mark it integration or slow"
        )

    @contextmanager
    def unit_test(self, nodeid: str) -> Iterator[None]:
        """Refuse processes while the block runs; clear what an earlier block refused."""
        self._test, self.refused = nodeid, []
        try:
            yield
        finally:
            self._test = None
