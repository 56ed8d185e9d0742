"""The SQL both stores run, written once as *plans* (docs/design.md, "State").

A plan is a generator: it yields the statements of one store operation and is
sent back the rows each one returned, so what an operation does (which
statements, in which order, how their rows become the answer) is written once
and does no I/O. Each store drives plans its own way: SQLite in its thread
(:func:`canaryd.service.store.sqlite.drive`), PostgreSQL on a pooled connection
(:func:`canaryd.service.store.postgres.drive`). A decision's writes read
nothing: they are a plain list of statements (:func:`write_decision`, run by
SQLite's ``execute`` and PostgreSQL's ``execute_batch``). Statements use SQLite's ``?`` markers; the
PostgreSQL store rewrites them.

:class:`PlannedStore` answers every :class:`~.contract.StateStore` call with
these plans; a store supplies how they run (:meth:`~PlannedStore.read`,
:meth:`~PlannedStore.change`, and :meth:`~PlannedStore.commit` for a decision).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple, TypeVar

from canaryd.core.analysis import CanaryState, CheckRecord
from canaryd.core.events import Event
from canaryd.service.store import retention
from canaryd.service.store.codec import (
    DecisionRows,
    loads,
    message_from_row,
    rollout_summary,
    state_from_dict,
)
from canaryd.service.store.contract import RELEASE, ROLLOUT_LIMIT, OutboxMessage
from canaryd.service.store.retention import Retention

T = TypeVar("T")

Row = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Insert:
    """Many rows into one table: SQLite runs one statement per row, PostgreSQL one for all.

    Attributes:
        head: ``INSERT INTO table(columns)``.
        rows: the values of each row, all of one width.
        tail: what follows the values (``ON CONFLICT …``).
    """

    head: str
    rows: Sequence[Row]
    tail: str = ""

    def one(self) -> str:
        """The statement that inserts one row."""
        return _one_row(self.head, len(self.rows[0]), self.tail)


@lru_cache(maxsize=64)
def _one_row(head: str, width: int, tail: str) -> str:
    """``head VALUES (?,…)tail`` for ``width`` values."""
    return f"{head} VALUES ({','.join('?' * width)}){tail}"


Statement = tuple[str, Sequence[Any]] | Insert
"""One step of a plan: ``(sql, args)`` answered with its rows (none for a change), or an insert."""

Plan = Generator[Statement, list[Row], T]
"""Yields statements, is sent each one's rows, returns the operation's answer."""


# ------------------------------------------------------------------ one decision


class _Writes(NamedTuple):
    """The statements of a decision that differ when rows carry the writer's epoch (docs/ha.md)."""

    state: str
    check: str
    outbox: str


_PLAIN = _Writes(
    "INSERT INTO canaries(key, state, updated) VALUES (?,?,?) ON CONFLICT(key) DO UPDATE "
    "SET state=excluded.state, updated=excluded.updated",
    "INSERT INTO checks(key, rollout, time, record) VALUES (?,?,?,?)",
    "INSERT INTO outbox(key, idem, target, payload, created, next_at, status)",
)
_FENCED = _Writes(
    "INSERT INTO canaries(key, state, updated, epoch) VALUES (?,?,?,?) ON CONFLICT(key) "
    "DO UPDATE SET state=excluded.state, updated=excluded.updated, epoch=excluded.epoch",
    "INSERT INTO checks(key, rollout, time, record, epoch) VALUES (?,?,?,?,?)",
    "INSERT INTO outbox(key, idem, target, payload, created, next_at, status, epoch)",
)

_EVENTS = "INSERT INTO events(key, time, name, level, event, rollout)"

_UPSERT_ROLLOUT = (
    "INSERT INTO rollouts(key, rollout, revision, phase, reason, metadata, started, ended, "
    "checks, failed, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key, rollout) DO UPDATE "
    "SET revision=excluded.revision, phase=excluded.phase, reason=excluded.reason, "
    "metadata=excluded.metadata, started=excluded.started, ended=excluded.ended, "
    "checks=rollouts.checks+excluded.checks, failed=rollouts.failed+excluded.failed, "
    "updated=excluded.updated"
)

_PENDING_ROUTES = (
    "INSERT INTO pending_routes(key, seq, routes) VALUES (?,?,?) ON CONFLICT(key) "
    "DO UPDATE SET seq=excluded.seq, routes=excluded.routes"
)


def write_decision(rows: DecisionRows, now: float, epoch: int | None = None) -> list[Statement]:
    """The statements that write one decision's rows (see :meth:`~.contract.StateStore.save`).

    A list, not a plan: they read nothing, and a store writes thousands of
    decisions a second in a batch (see the module's docstring).

    Args:
        rows: the decision, encoded.
        now: the time written as ``updated``/``created``.
        epoch: the writer's lease epoch, written with its rows (None: the store has none).
    """
    tag: tuple[int, ...] = () if epoch is None else (epoch,)
    writes = _PLAIN if epoch is None else _FENCED
    steps: list[Statement] = [] if rows.settle is None else _settle(rows.key, rows.settle)
    steps.append((writes.state, (rows.key, rows.state, now, *tag)))
    if rows.record is not None:
        steps.append((writes.check, (rows.key, rows.rollout, *rows.record, *tag)))
    if rows.events:  # a statement costs even with no rows
        steps.append(Insert(_EVENTS, rows.events))
    if rows.summary is not None:
        steps.append((_UPSERT_ROLLOUT, (*rows.summary, now)))
    if rows.outbox:
        status = "pending" if rows.routes is None else "held"
        outbox = [(*m, now, now, status, *tag) for m in rows.outbox]
        steps.append(Insert(writes.outbox, outbox, " ON CONFLICT(idem) DO NOTHING"))
    if rows.routes is not None:
        steps.append((_PENDING_ROUTES, (rows.key, rows.seq, rows.routes)))
    return steps


def _settle(key: str, how: str) -> list[Statement]:
    """Release (``RELEASE``) or delete (``DROP``) a canary's held messages; forget its routes."""
    if how == RELEASE:
        held = "UPDATE outbox SET status='pending' WHERE status='held' AND key=?"
    else:
        held = "DELETE FROM outbox WHERE status='held' AND key=?"
    return [(held, (key,)), ("DELETE FROM pending_routes WHERE key=?", (key,))]


# ------------------------------------------------------------------ reads

_ROLLOUT_COLUMNS = "rollout, revision, phase, reason, metadata, started, ended, checks, failed"
_NEWEST = "started DESC, updated DESC"


def read_states() -> Plan[dict[str, CanaryState]]:
    """Every stored canary state, by key."""
    rows = yield "SELECT key, state FROM canaries", ()
    return {key: state_from_dict(loads(raw)) for key, raw in rows}


def read_pending() -> Plan[dict[str, tuple[int, list[dict[str, Any]]]]]:
    """Routes saved but not yet settled, by key: (decision number, routes)."""
    rows = yield "SELECT key, seq, routes FROM pending_routes", ()
    return {key: (int(seq), loads(raw)) for key, seq, raw in rows}


def read_newest(column: str, table: str, key: str, limit: int) -> Plan[list[dict[str, Any]]]:
    """The JSON ``column`` of a canary's newest ``limit`` rows of ``table``, newest first."""
    rows = yield f"SELECT {column} FROM {table} WHERE key=? ORDER BY id DESC LIMIT ?", (key, limit)
    return [loads(r[0]) for r in rows]


def read_rollouts(key: str, limit: int) -> Plan[list[dict[str, Any]]]:
    """A canary's rollouts, newest first, as the API's ``RolloutSummary``."""
    sql = f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE key=? ORDER BY {_NEWEST} LIMIT ?"
    rows = yield sql, (key, limit)
    return [rollout_summary(row, current=i == 0) for i, row in enumerate(rows)]


def read_rollout(key: str, rollout: str, limit: int) -> Plan[dict[str, Any] | None]:
    """One rollout with its newest ``limit`` checks and events (oldest first), or None."""
    sql = f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE key=? AND rollout=?"
    found = yield sql, (key, rollout)
    if not found:
        return None
    newest = yield f"SELECT rollout FROM rollouts WHERE key=? ORDER BY {_NEWEST} LIMIT 1", (key,)
    body = rollout_summary(found[0], current=bool(newest) and newest[0][0] == rollout)
    for column, table, field in (("record", "checks", "checks"), ("event", "events", "events")):
        rows = yield (
            f"SELECT {column} FROM (SELECT id, {column} FROM {table} WHERE key=? AND rollout=? "
            "ORDER BY id DESC LIMIT ?) r ORDER BY id",
            (key, rollout, limit),
        )
        body[field] = [loads(r[0]) for r in rows]
    return body


# ------------------------------------------------------------------ outbox


def read_due(now: float, limit: int) -> Plan[list[OutboxMessage]]:
    """Pending messages due for delivery: per canary, only its oldest pending one."""
    rows = yield (
        "SELECT o.id, o.key, o.idem, o.target, o.payload, o.attempts, o.created "
        "FROM outbox o JOIN (SELECT key, MIN(id) AS id FROM outbox "
        "WHERE status='pending' GROUP BY key) h ON o.id = h.id "
        "WHERE o.next_at <= ? ORDER BY o.id LIMIT ?",
        (now, limit),
    )
    return [message_from_row(row) for row in rows]


def write_mark(message_id: int, status: str, next_at: float, error: str | None) -> Plan[None]:
    """Record a delivery attempt: ``sent``, ``dead``, or ``pending`` with a retry time."""
    yield (
        "UPDATE outbox SET status=?, next_at=?, attempts=attempts+1, last_error=? WHERE id=?",
        (status, next_at, error, message_id),
    )


def read_outbox_stats() -> Plan[dict[str, Any]]:
    """Counts by status and the creation time of the oldest pending message."""
    counts = yield "SELECT status, COUNT(*) FROM outbox GROUP BY status", ()
    oldest = yield "SELECT MIN(created) FROM outbox WHERE status='pending'", ()
    return {"counts": {k: int(v) for k, v in counts}, "oldest_pending": oldest[0][0]}


# ------------------------------------------------------------------ the store


class PlannedStore(ABC):
    """The :class:`~.contract.StateStore` calls both stores answer alike, with the plans above."""

    @abstractmethod
    async def read(self, plan: Plan[T]) -> T:
        """Run a plan that only reads.

        Raises:
            StoreError: the store is not open, or a statement failed.
        """

    @abstractmethod
    async def change(self, plan: Plan[T]) -> T:
        """Run a plan that writes, in one transaction (fenced where the store has a fence).

        Raises:
            FencedError: another replica leads; nothing was written.
            StoreError: the store is not open, or a statement failed; nothing was written.
        """

    @abstractmethod
    async def commit(self, rows: DecisionRows) -> None:
        """Write one decision's rows (:func:`write_decision`) atomically.

        Raises:
            FencedError: another replica leads; nothing was written.
            StoreError: nothing of this decision was written.
        """

    async def save(
        self,
        key: str,
        state: CanaryState,
        record: CheckRecord | None,
        events: Sequence[Event],
        outbox: Sequence[OutboxMessage],
        *,
        routes: Sequence[dict[str, Any]] | None = None,
        settle: str | None = None,
    ) -> None:
        """Persist a decision atomically (see :meth:`~.contract.StateStore.save`).

        The rows are encoded here, in the event loop's thread, before the store
        queues them (see :class:`~.codec.DecisionRows`).

        Raises:
            FencedError: another replica leads; nothing was written.
            StoreError: nothing of this decision was written.
        """
        await self.commit(DecisionRows.encode(key, state, record, events, outbox, routes, settle))

    async def load_states(self) -> dict[str, CanaryState]:
        """Every stored canary state, by key."""
        return await self.read(read_states())

    async def load_pending(self) -> dict[str, tuple[int, list[dict[str, Any]]]]:
        """Routes saved but not yet settled, by key: (decision number, routes)."""
        return await self.read(read_pending())

    async def history(self, key: str, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent check records of a canary, newest first."""
        return await self.read(read_newest("record", "checks", key, limit))

    async def events(self, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent events of a canary, newest first."""
        return await self.read(read_newest("event", "events", key, limit))

    async def rollouts(self, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """A canary's rollouts, newest first, as the API's ``RolloutSummary``."""
        return await self.read(read_rollouts(key, limit))

    async def rollout(
        self, key: str, rollout: str, limit: int = ROLLOUT_LIMIT
    ) -> dict[str, Any] | None:
        """One rollout with its checks and events (oldest first), or None if unknown."""
        return await self.read(read_rollout(key, rollout, limit))

    async def prune(self, now: float | None = None, keep: Retention | None = None) -> None:
        """Drop past rollouts beyond ``keep`` (with their checks and events), old sent messages.

        See :class:`~.retention.Retention`; a canary's newest rollout is never dropped.

        Raises:
            StoreError: nothing was pruned.
        """
        now = time.time() if now is None else now
        await self.change(retention.prune(now, keep or Retention()))

    async def due(self, now: float, limit: int = 100) -> list[OutboxMessage]:
        """Pending messages due for delivery: per canary, only its oldest pending one."""
        return await self.read(read_due(now, limit))

    async def mark(
        self, message_id: int, status: str, *, next_at: float = 0.0, error: str | None = None
    ) -> None:
        """Record a delivery attempt: ``sent``, ``dead``, or ``pending`` with a retry time."""
        await self.change(write_mark(message_id, status, next_at, error))

    async def outbox_stats(self) -> dict[str, Any]:
        """Counts by status and the creation time of the oldest pending message."""
        return await self.read(read_outbox_stats())
