"""A replica's side of the leader lease (docs/ha.md): follow until leading, then hold on.

With the state in PostgreSQL, a replica starts as a follower: it serves the API
from the database (its canaries are copies read again every renewal, never
scheduled) until it holds the lease; then the supervisor starts the loops. The
lease's renewals and a guard of its local deadline keep running: a leader that
loses the lease stops at once (systemd starts it again, as a follower).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import anyio.abc
import structlog

from canaryd.core.analysis import CanaryState
from canaryd.errors import CanarydError

if TYPE_CHECKING:
    from canaryd.service.daemon import Daemon

log = structlog.get_logger()

LEASE_GUARD_SECONDS = 0.05
"""How often a replica checks its lease's local deadline (docs/ha.md)."""


class Leadership:
    """Follows until this replica holds the lease; stops the daemon when it loses it."""

    def __init__(self, daemon: Daemon) -> None:
        """Lead or follow for ``daemon`` (which has a lease once it runs)."""
        self.daemon = daemon
        self._tg: anyio.abc.TaskGroup | None = None
        """The supervisor's task group (cancelled when the lease is lost)."""
        self._lease_event: anyio.Event | None = None
        """Set when the lease changes hands (wakes a follower waiting to lead)."""

    async def follow(self, tg: anyio.abc.TaskGroup, stop: anyio.Event) -> bool:
        """Serve reads from the database until this replica leads; False if stopped first."""
        from canaryd.service.api import serve

        d = self.daemon
        assert d.lease is not None
        lease = d.lease
        self._tg = tg
        await self._refresh_views()
        await tg.start(serve, d)
        self._lease_event = first = anyio.Event()
        tg.start_soon(lease.run, self._on_lease)
        tg.start_soon(self._guard)
        with anyio.move_on_after(lease.renew_every):  # ready once it knows who leads
            await first.wait()
        d.ready = True
        d.notifier.ready(d.health.status_line())
        tg.start_soon(d.health.heartbeat)
        while not lease.leading:
            self._lease_event = changed = anyio.Event()
            with anyio.move_on_after(lease.renew_every):
                async with anyio.create_task_group() as waits:  # whichever comes first
                    for event in (stop, changed):
                        waits.start_soon(_set_then_cancel, event, waits.cancel_scope)
            if stop.is_set():
                return False
            if not lease.leading:
                await self._refresh_views()
        log.info("lease.acquired", epoch=lease.epoch, cluster=lease.cluster)
        return True

    async def _guard(self) -> None:
        """Stop at the lease's local deadline even if renewals hang (no database I/O here)."""
        lease = self.daemon.lease
        assert lease is not None
        while not lease.lost:  # noqa: ASYNC110 - a clock deadline, no event to wait on
            await anyio.sleep(LEASE_GUARD_SECONDS)
        self._on_lease()

    def _on_lease(self) -> None:
        """The lease changed hands: tell systemd; a leader that lost it stops at once."""
        lease = self.daemon.lease
        assert lease is not None
        self.daemon.health.send_status(changed_only=False)
        if self._lease_event is not None:
            self._lease_event.set()
        if lease.lost:
            log.error("lease.lost", cluster=lease.cluster)
            assert self._tg is not None
            self._tg.cancel_scope.cancel()

    async def _refresh_views(self) -> None:
        """A follower's copies of the canaries, read from the database (not scheduled)."""
        d = self.daemon
        try:
            states = await d.services.store.load_states()
        except CanarydError as exc:
            log.error("state.read_failed", error=str(exc))
            return
        for canary in d.settings.canaries:
            state = states.get(canary.key) or CanaryState()
            view = d.runners.get(canary.key)
            if view is None:
                view = d.runners[canary.key] = d.new_runner(canary.key, state)
            view.state = state
            d.metrics.track(canary.key, state)


async def _set_then_cancel(event: anyio.Event, scope: anyio.CancelScope) -> None:
    """Wait for ``event``, then cancel ``scope`` (the first of several waits to end)."""
    await event.wait()
    scope.cancel()
