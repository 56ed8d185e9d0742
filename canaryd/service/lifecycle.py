"""A loop's life beyond its ticks: restart recovery, reload takeover, removal and stop.

:class:`Lifecycle` is the base of :class:`~canaryd.service.runtime.CanaryRunner` above
:class:`~canaryd.service.commit.Committer`. It owns the lock a tick and a command take,
and what happens around them: a loop restarted from the store sends the routes and
the rollback its previous run may not have (:meth:`Lifecycle.restore`,
:meth:`Lifecycle.recover`); a loop a reload re-adds continues the removed one once its
last tick has ended (:meth:`Lifecycle.succeed`); a removed loop first finishes its
pending rollback and what the store has not recorded (:meth:`Lifecycle.retire`), and a
stopping daemon gives every loop a last chance to record it (:meth:`Lifecycle.close`;
docs/reliability.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import anyio
import structlog

from canaryd.core import analysis as core
from canaryd.service.commit import Committer
from canaryd.service.effects import route_from_dict
from canaryd.service.ledger import PendingRoutes
from canaryd.service.rollbacks import Entry as JournalEntry

log = structlog.get_logger()

TAKEOVER_SECONDS = 120.0
"""How long a re-added canary's loop waits for its previous loop's last tick or command."""

UNRECORDED_GRACE_SECONDS = 60.0
"""How long a removed canary's loop, or a stopping daemon, keeps trying to record the
decisions the store could not take (then says in ``state.unrecorded_lost`` what is lost)."""

UNRECORDED_RETRY_SECONDS = 0.5
"""On stop, how often a loop tries again to record what the store did not take."""

UNRECORDED_STOP_SECONDS = 10.0
"""On stop, how long all loops together may try to record those (inside systemd's
``TimeoutStopSec=60s`` with the tick and outbox graces)."""


class Lifecycle(Committer):
    """One canary's loop as it starts, hands over, is removed and stops."""

    def __post_init__(self) -> None:
        """A loop of its own, not yet replacing, removed or recovering anything."""
        super().__post_init__()
        # asyncio's: a free lock is taken without a trip through the event loop or
        # anyio's task lookups (~4 % of a saturated daemon's CPU)
        self._lock = asyncio.Lock()
        self._predecessor: Lifecycle | None = None  # the loop this one replaces (a reload)
        self._retired = False  # removed by a reload: decides nothing more
        self._draining = False  # removed with a rollback pending: retries only that rollback
        self._on_drained: Callable[[], None] | None = None
        self._drain_until = 0.0  # a removed loop's unrecorded decisions: given up after this
        self._lost_rollback: JournalEntry | None = None  # sent before a restart, unrecorded
        self._told: str | None = None  # the pending route a removal has logged (its action)

    async def _take_over(self) -> bool:
        """Under the lock: take the state of the loop this one replaces, once its last
        tick or command has ended (a no-op without one).

        Returns:
            False if that tick did not end in time (try again next tick).
        """
        pred = self._predecessor
        if pred is None:
            return True
        try:
            with anyio.fail_after(TAKEOVER_SECONDS):  # once per reload: anyio's (design.md)
                await pred._lock.acquire()
        except TimeoutError:
            log.error("reload.takeover_late", canary=self.spec.name, namespace=self.spec.namespace)
            return False
        try:  # the state after the previous loop's last decision, recorded or not
            pred._retired = True
            self.state, self._backlog, self._pending, self._settle, self._seq = (
                pred.state,
                pred._backlog,
                pred._pending,
                pred._settle,
                pred._seq,
            )
            self._predecessor = None
        finally:
            pred._lock.release()
        self.services.on_change(self.key, self.state)
        return True

    def succeed(self, predecessor: Lifecycle) -> None:
        """Continue the canary of a loop a reload removed (see docs/reliability.md).

        The loop's state is read only once the predecessor's tick or command in
        flight has ended, so a tick committed after the reload is not lost.
        """
        predecessor._retired = True
        predecessor._draining = False  # its pending rollback is this loop's now
        self._predecessor = predecessor
        self.state = predecessor.state

    def retire(self, on_drained: Callable[[], None] | None = None) -> bool:
        """Decide nothing more (removed by a reload); a tick in flight still ends.

        A canary whose rollback the router has not applied yet keeps ticking, only
        to send that rollback until the router confirms it; one whose decisions the
        store has not recorded yet (or with a tick in flight that may leave some)
        keeps ticking to record them, for :data:`UNRECORDED_GRACE_SECONDS` at most.
        Then it calls ``on_drained`` (docs/reliability.md, "A canary removed with a
        rollback pending"). A pending ``promote`` is not retried: the event
        ``reload.promote_abandoned`` says so. A tick in flight that leaves a route
        pending says so once it has ended (:meth:`_drain`).

        Returns:
            Whether the loop keeps ticking for its pending rollback or unrecorded work.
        """
        rollback = self._tell_pending()
        if not (rollback or self._lock.locked() or self._backlog or self._settle):
            self._retired = True
            return False
        self._draining, self._on_drained = True, on_drained
        self._drain_until = self.services.clock() + UNRECORDED_GRACE_SECONDS
        return True

    def _tell_pending(self) -> bool:
        """Log the route a removed canary leaves pending, once (``reload.rollback_pending``
        or ``reload.promote_abandoned``).

        Returns:
            Whether a rollback is pending (the removed loop retries it; a promote it does not).
        """
        route = core.pending_route(self.state)
        if route is None or route.action == self._told:
            return route is not None and route.action == "rollback"
        self._told = route.action
        where = {"canary": self.spec.name, "namespace": self.spec.namespace}
        if route.action == "promote":
            log.error("reload.promote_abandoned", **where, revision=self.state.revision)
            return False
        detail = "removed from the config; its rollback is retried until the router applies it"
        log.error("reload.rollback_pending", **where, detail=detail)
        return True

    async def _drain(self) -> None:
        """Retry the pending rollback of a removed canary, record what the store has not;
        retire once the router took the rollback and the store the rest (or its time ran out).
        """
        rollback = self._tell_pending()  # a tick in flight at removal may have left one
        await self._catch_up()
        if rollback:
            await self._retry_pending_route()
            if core.pending_route(self.state) is not None:
                return
            log.info(
                "reload.rollback_applied", canary=self.spec.name, namespace=self.spec.namespace
            )
        if self._backlog or self._settle:
            if self.services.clock() < self._drain_until:
                return
            self.unrecorded_lost("removed from the config")
        self._draining, self._retired = False, True
        if self._on_drained is not None:
            self._on_drained()  # a loop still owing the store is kept for an add-back

    @property
    def unrecorded(self) -> bool:
        """Whether decisions (or a settlement) wait for the store."""
        return bool(self._backlog or self._settle)

    async def close(self, within: float = UNRECORDED_STOP_SECONDS) -> None:
        """At stop: try to record what the store has not (``within`` seconds at most), and
        say in ``state.unrecorded_lost`` what it still could not."""
        if not (self._backlog or self._settle) or self._retired:
            return  # a retired loop's successor owns its backlog
        with anyio.move_on_after(within):  # once, at stop: anyio's (docs/design.md)
            async with self._lock:
                await self._catch_up()
                while self._backlog or self._settle:  # until it can, or the time is up
                    await anyio.sleep(UNRECORDED_RETRY_SECONDS)
                    await self._catch_up()
        if self._backlog or self._settle:
            self.unrecorded_lost("daemon stopping")

    def unrecorded_lost(self, why: str) -> None:
        """Log the decisions this loop gives up recording (it stops owning them)."""
        log.error(
            "state.unrecorded_lost",
            canary=self.spec.name,
            namespace=self.spec.namespace,
            reason=why,
            unrecorded=len(self._backlog),
            seqs=[u.state.seq for u in self._backlog],
            failed_checks=self.state.failed_checks,
            phase=self.state.phase.value,
        )

    @property
    def settled(self) -> bool:
        """Idle, with everything it decided recorded and routed: the store alone tells its state."""
        return not (
            self._lock.locked() or self._backlog or self._pending or self._settle or self._draining
        )

    def recover(self, entry: JournalEntry | None) -> None:
        """Take the newest journalled rollback of this canary (read at start): one the
        store has not recorded is decided again before anything else (docs/reliability.md,
        "A rollback the store never recorded")."""
        if (
            entry is not None
            and entry.rollout == self.state.rollout_id
            and entry.seq > self.state.seq
            and self.state.active
        ):
            self._lost_rollback = entry

    async def _rollback_again(self) -> None:
        """Send and record again the rollback the store lost to a restart."""
        entry, self._lost_rollback = self._lost_rollback, None
        assert entry is not None
        decision = core.rollback_again(
            self.spec,
            self.state,
            self.services.clock(),
            entry.reason,
            entry.fields,
            failed_checks=entry.failed_checks,
        )
        log.warning(
            "rollback.unrecorded_resent",
            canary=self.spec.name,
            namespace=self.spec.namespace,
            revision=self.state.revision,
            reason=entry.reason,
        )
        await self._commit(decision)

    def restore(self, pending: tuple[int, list[dict[str, Any]]] | None) -> None:
        """Take the routes a previous run recorded but may not have sent (sent next tick).

        A loop that continues a removed one takes that one's instead (:meth:`succeed`).
        """
        if pending is not None and self._predecessor is None:
            seq, routes = pending
            self._pending = PendingRoutes(
                seq, tuple(route_from_dict(r) for r in routes), self.state
            )
