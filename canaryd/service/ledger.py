"""The runner's record of its decisions: what the store holds, and what it does not yet.

:class:`Ledger` is the base of :class:`~canaryd.service.runtime.CanaryRunner` that
saves decisions (with their events, outbox messages and the routes they will send) and
keeps what could not be saved: decisions made while the store failed (the backlog,
recorded once it can), routes recorded but not yet confirmed by the router, and what
the next save must settle in the store (docs/reliability.md, "Decisions and state").
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import structlog

from canaryd.config.models import CanaryConfig
from canaryd.core.analysis import CanaryState, CheckRecord, Decision, Emit, Route
from canaryd.core.events import Event
from canaryd.errors import StoreError
from canaryd.logs import log_event
from canaryd.service.effects import outbox_messages, route_to_dict
from canaryd.service.rollbacks import Entry as JournalEntry
from canaryd.service.services import Services
from canaryd.service.store import OutboxMessage

log = structlog.get_logger()

BACKLOG_KEEP = 1000
"""Decisions a canary keeps in memory while the store cannot record them (oldest dropped)."""


@dataclass(frozen=True, slots=True)
class PendingRoutes:
    """Routes of a recorded decision not yet applied by the router."""

    seq: int
    routes: tuple[Route, ...]
    state: CanaryState
    """The state the decision recorded (shown once the routes are applied)."""


@dataclass(frozen=True, slots=True)
class Unsaved:
    """A decision that took effect while the store could not record it."""

    state: CanaryState
    record: CheckRecord | None
    events: list[Event]
    outbox: list[OutboxMessage]


@dataclass(eq=False)
class Ledger:
    """One canary's decisions as recorded, and those waiting for the store or the router."""

    spec: CanaryConfig
    state: CanaryState
    services: Services

    def __post_init__(self) -> None:
        """Start with nothing owed to the store or the router."""
        self._backlog: list[Unsaved] = []  # decisions the store could not record yet
        self._pending: PendingRoutes | None = None  # recorded routes the router has not confirmed
        self._settle: str | None = None  # owed to the store by the next save of this canary
        self._seq = 0  # number of the last decision made, shown or not yet (routes pending)
        self.last_record: CheckRecord | None = None
        """The newest check record this runner applied (None: read it from the store)."""

    @property
    def key(self) -> str:
        """``namespace/name``."""
        return self.spec.key

    @property
    def version(self) -> int:
        """Decisions made so far (recorded, or waiting for the store); stored with the state."""
        return max(self.state.seq, self._seq)

    async def _journal(self, state: CanaryState, reason: str, fields: Mapping[str, Any]) -> None:
        """Write a rollback to the journal before it is sent (a no-op without a journal)."""
        journal = self.services.journal
        if journal is not None:
            entry = JournalEntry(
                self.key,
                state.rollout_id,
                self.version + 1,
                reason,
                dict(fields),
                failed_checks=state.failed_checks,
            )
            await journal.record(entry)

    async def _catch_up(self) -> None:
        """Record what the store could not take before (a no-op when nothing waits)."""
        if not (self._backlog or self._settle):
            return
        try:
            await self._flush_backlog()
            if self._settle is not None:
                await self._store_save(self.state, None, [], [])
        except StoreError as exc:
            self._persist_failed(exc)

    async def _flush_backlog(self) -> None:
        """Record the decisions the store could not take, oldest first.

        Raises:
            StoreError: the store still cannot record them (what is left stays queued).
        """
        while self._backlog:
            u = self._backlog[0]
            await self._store_save(u.state, u.record, u.events, u.outbox)
            self._backlog.pop(0)

    async def _store_save(
        self,
        state: CanaryState,
        record: CheckRecord | None,
        events: Sequence[Event],
        outbox: Sequence[OutboxMessage],
        routes: Sequence[Route] | None = None,
    ) -> None:
        """One save of this canary, settling what an earlier one left held.

        Raises:
            StoreError: it could not be written.
        """
        await self.services.store.save(
            self.key,
            state,
            record,
            events,
            outbox,
            routes=None if routes is None else [route_to_dict(r) for r in routes],
            settle=self._settle,
        )
        self._settle = None

    def _persist_failed(self, exc: StoreError) -> None:
        log.error(
            "state.persist_failed",
            error=str(exc),
            canary=self.spec.name,
            namespace=self.spec.namespace,
            unrecorded=len(self._backlog),
        )

    async def _persist(
        self, decision: Decision, routes: Sequence[Route] | None = None
    ) -> CanaryState:
        """Save the decision (and the routes it will send) and return the state saved.

        Raises:
            StoreError: it could not be written.
        """
        new = replace(decision.state, seq=self.version + 1)
        events = [e.event for e in decision.effects if isinstance(e, Emit)]
        await self._store_save(
            new, decision.record, events, outbox_messages(self.spec, decision, new.seq), routes
        )
        self._seq = new.seq
        return new

    def _remember(self, decision: Decision) -> CanaryState:
        """Keep a decision the store could not record, to record it later; return its state."""
        new = replace(decision.state, seq=self.version + 1)
        self._seq = new.seq
        events = [e.event for e in decision.effects if isinstance(e, Emit)]
        self._backlog.append(
            Unsaved(new, decision.record, events, outbox_messages(self.spec, decision, new.seq))
        )
        if len(self._backlog) > BACKLOG_KEEP:
            dropped = self._backlog.pop(0)
            log.error("state.unrecorded_dropped", seq=dropped.state.seq, kept=BACKLOG_KEEP)
        return new

    def _applied(self, decision: Decision, new: CanaryState) -> None:
        """The decision took effect: show it, log its events."""
        self.state = new
        if decision.record is not None:
            self.last_record = decision.record
        log_events(decision)
        self.services.on_change(self.key, new)


def log_events(decision: Decision) -> None:
    """Log the events of a decision that took effect (one line each)."""
    for effect in decision.effects:
        if isinstance(effect, Emit):
            log_event(effect.event)
