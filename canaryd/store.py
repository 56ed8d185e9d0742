"""State store: canary state, check history, events and the outbox, in SQLite (WAL).

A tick's new state, its check record, its events and the outbox messages it
caused are written in one transaction, so a crash (even ``kill -9``) leaves
either all of them or none. SQLite calls run in a worker thread, one at a time.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio
import anyio.to_thread

from canaryd.analysis import CanaryState, CheckRecord, Phase
from canaryd.errors import StoreError
from canaryd.events import Event

T = TypeVar("T")

HISTORY_KEEP = 100
"""Check records kept per canary."""

EVENTS_KEEP = 500
"""Events kept per canary."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS canaries (
    key TEXT PRIMARY KEY, state TEXT NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS checks (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, rollout TEXT, time REAL NOT NULL,
    record TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS checks_key ON checks(key, id);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, time REAL NOT NULL, name TEXT NOT NULL,
    level TEXT NOT NULL, event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_key ON events(key, id);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY, key TEXT NOT NULL, idem TEXT NOT NULL UNIQUE,
    target TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL,
    next_at REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending', last_error TEXT);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(status, next_at);
"""


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message to deliver later: an alert or a webhook call.

    Attributes:
        key: canary ``namespace/name`` (messages of one canary go out in order).
        idempotency_key: stable across retries and restarts.
        target: ``alert:<alert name>`` or ``hook:<webhook name>``.
        payload: the event (alerts) or the webhook body (hooks).
        id: row id once stored.
        attempts: delivery attempts so far.
        created: Unix time it was stored.
    """

    key: str
    idempotency_key: str
    target: str
    payload: dict[str, Any]
    id: int = 0
    attempts: int = 0
    created: float = 0.0


class StateStore(Protocol):
    """Where canaryd keeps what must survive a restart."""

    async def load_states(self) -> dict[str, CanaryState]:
        """Every stored canary state, by key."""
        ...

    async def save(
        self,
        key: str,
        state: CanaryState,
        record: CheckRecord | None,
        events: Sequence[Event],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        """Persist a decision atomically.

        Raises:
            StoreError: nothing was written.
        """
        ...

    async def history(self, key: str, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent check records of a canary, newest first."""
        ...


# --------------------------------------------------------------------------- codec


def _clean(value: Any) -> Any:
    """Make floats JSON-safe (NaN/Inf as strings)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


def dumps(value: Any) -> str:
    """JSON for the store and the API: compact, NaN-safe."""
    return json.dumps(_clean(value), separators=(",", ":"), default=str)


def state_to_dict(state: CanaryState) -> dict[str, Any]:
    """A state as plain JSON data."""
    data = asdict(state)
    data["approvals"] = sorted(state.approvals)
    data["metadata"] = dict(state.metadata)
    return data


def state_from_dict(data: dict[str, Any]) -> CanaryState:
    """Rebuild a state; unknown keys (from a newer version) are ignored.

    Raises:
        StoreError: the data is not a valid state.
    """
    known = {f.name for f in fields(CanaryState)}
    try:
        kw = {k: v for k, v in data.items() if k in known}
        kw["phase"] = Phase(kw.get("phase", Phase.INITIALIZED))
        if kw.get("paused_phase"):
            kw["paused_phase"] = Phase(kw["paused_phase"])
        kw["approvals"] = frozenset(kw.get("approvals", ()))
        return CanaryState(**kw)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"stored state is invalid: {exc}") from exc


def event_to_dict(event: Event) -> dict[str, Any]:
    """An event as plain JSON data (the shape stored, alerted and served)."""
    return {
        "event": event.name,
        "level": event.level,
        "canary": event.canary,
        "revision": event.revision,
        "phase": event.phase,
        "time": event.time,
        **event.fields,
    }


# --------------------------------------------------------------------------- sqlite


class SqliteStore:
    """:class:`StateStore` on one SQLite file in WAL mode."""

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        """Remember where the database lives; :meth:`open` opens it."""
        self.path = path
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    async def open(self) -> None:
        """Open (creating if needed) the database.

        Raises:
            StoreError: the file cannot be created or is not a canaryd database.
        """
        await self._run(self._open)

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(
            self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None
        )
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db

    async def close(self) -> None:
        """Close the database (idempotent)."""
        if self._db is not None:
            db, self._db = self._db, None
            await anyio.to_thread.run_sync(db.close, limiter=self._limiter)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        try:
            return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)
        except sqlite3.Error as exc:
            raise StoreError(f"state store {self.path}: {exc}") from exc
        except OSError as exc:
            raise StoreError(f"state store {self.path}: {exc.strerror or exc}") from exc

    @property
    def db(self) -> sqlite3.Connection:
        """The open connection.

        Raises:
            StoreError: the store is not open.
        """
        if self._db is None:
            raise StoreError("state store is not open")
        return self._db

    async def load_states(self) -> dict[str, CanaryState]:
        """Every stored canary state, by key (see :class:`StateStore`)."""
        rows = await self._run(
            lambda: self.db.execute("SELECT key, state FROM canaries").fetchall()
        )
        return {key: state_from_dict(json.loads(raw)) for key, raw in rows}

    async def save(
        self,
        key: str,
        state: CanaryState,
        record: CheckRecord | None,
        events: Sequence[Event],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        """Persist a decision in one transaction (see :class:`StateStore`)."""
        await self._run(self._save, key, state, record, events, outbox)

    def _save(
        self,
        key: str,
        state: CanaryState,
        record: CheckRecord | None,
        events: Sequence[Event],
        outbox: Sequence[OutboxMessage],
    ) -> None:
        db, now = self.db, time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO canaries(key, state, updated) VALUES (?,?,?) "
                "ON CONFLICT(key) DO UPDATE SET state=excluded.state, "
                "updated=excluded.updated",
                (key, dumps(state_to_dict(state)), now),
            )
            if record is not None:
                db.execute(
                    "INSERT INTO checks(key, rollout, time, record) VALUES (?,?,?,?)",
                    (key, state.rollout_id, record.time, dumps(record.as_dict())),
                )
            db.executemany(
                "INSERT INTO events(key, time, name, level, event) VALUES (?,?,?,?,?)",
                [(key, e.time, e.name, e.level, dumps(event_to_dict(e))) for e in events],
            )
            db.executemany(
                "INSERT OR IGNORE INTO outbox(key, idem, target, payload, created, next_at) "
                "VALUES (?,?,?,?,?,?)",
                [(m.key, m.idempotency_key, m.target, dumps(m.payload), now, now) for m in outbox],
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def history(self, key: str, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent check records of a canary, newest first."""
        rows = await self._run(
            lambda: self.db.execute(
                "SELECT record FROM checks WHERE key=? ORDER BY id DESC LIMIT ?", (key, limit)
            ).fetchall()
        )
        return [json.loads(r[0]) for r in rows]

    async def events(self, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent events of a canary, newest first."""
        rows = await self._run(
            lambda: self.db.execute(
                "SELECT event FROM events WHERE key=? ORDER BY id DESC LIMIT ?", (key, limit)
            ).fetchall()
        )
        return [json.loads(r[0]) for r in rows]

    async def prune(self) -> None:
        """Drop check records and events beyond what is kept per canary."""

        def _prune() -> None:
            for table, keep in (("checks", HISTORY_KEEP), ("events", EVENTS_KEEP)):
                self.db.execute(
                    f"DELETE FROM {table} WHERE id IN (SELECT id FROM (SELECT id, "
                    f"ROW_NUMBER() OVER (PARTITION BY key ORDER BY id DESC) AS n FROM {table}) "
                    "WHERE n > ?)",
                    (keep,),
                )

        await self._run(_prune)

    # ------------------------------------------------------------------ outbox

    async def due(self, now: float, limit: int = 100) -> list[OutboxMessage]:
        """Pending messages due for delivery: per canary, only its oldest pending one."""
        rows = await self._run(
            lambda: self.db.execute(
                "SELECT o.id, o.key, o.idem, o.target, o.payload, o.attempts, o.created "
                "FROM outbox o JOIN (SELECT key, MIN(id) AS id FROM outbox "
                "WHERE status='pending' GROUP BY key) h ON o.id = h.id "
                "WHERE o.next_at <= ? ORDER BY o.id LIMIT ?",
                (now, limit),
            ).fetchall()
        )
        return [
            OutboxMessage(k, idem, target, json.loads(p), i, a, c)
            for i, k, idem, target, p, a, c in rows
        ]

    async def mark(
        self, message_id: int, status: str, *, next_at: float = 0.0, error: str | None = None
    ) -> None:
        """Record a delivery attempt: ``sent``, ``dead``, or ``pending`` with a retry time."""
        await self._run(
            lambda: self.db.execute(
                "UPDATE outbox SET status=?, next_at=?, attempts=attempts+1, last_error=? "
                "WHERE id=?",
                (status, next_at, error, message_id),
            )
        )

    async def outbox_stats(self) -> dict[str, Any]:
        """Counts by status and the age of the oldest pending message."""

        def _stats() -> dict[str, Any]:
            counts = dict(
                self.db.execute("SELECT status, COUNT(*) FROM outbox GROUP BY status").fetchall()
            )
            oldest = self.db.execute(
                "SELECT MIN(created) FROM outbox WHERE status='pending'"
            ).fetchone()[0]
            return {"counts": counts, "oldest_pending": oldest}

        return await self._run(_stats)
