"""State store: canary state, check history, events and the outbox, in SQLite (WAL).

A tick's new state, its check record, its events and the outbox messages it
caused are written in one transaction, so a crash (even ``kill -9``) leaves
either all of them or none. SQLite calls run in a worker thread, one at a time.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import anyio

from canaryd.core.analysis import CanaryState, CheckRecord
from canaryd.core.events import Event
from canaryd.errors import StoreError
from canaryd.service.store import retention
from canaryd.service.store.codec import (
    _NEWEST,
    _ROLLOUT_COLUMNS,
    _rollout_dict,
    _Rows,
    state_from_dict,
)
from canaryd.service.store.contract import RELEASE, OutboxMessage
from canaryd.service.store.retention import SENT_KEEP_SECONDS, Retention

T = TypeVar("T")

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
CREATE TABLE IF NOT EXISTS pending_routes (
    key TEXT PRIMARY KEY, seq INTEGER NOT NULL, routes TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (
    key TEXT NOT NULL, rollout TEXT NOT NULL, revision TEXT, phase TEXT NOT NULL,
    reason TEXT, metadata TEXT NOT NULL, started REAL, ended REAL,
    checks INTEGER NOT NULL DEFAULT 0, failed INTEGER NOT NULL DEFAULT 0,
    updated REAL NOT NULL, PRIMARY KEY (key, rollout));
CREATE INDEX IF NOT EXISTS checks_rollout ON checks(key, rollout, id);
"""

_MIGRATIONS = (("events", "rollout", "ALTER TABLE events ADD COLUMN rollout TEXT"),)
"""Columns added since the first schema: (table, column, statement adding it)."""


_EXPIRED = """
SELECT key, rollout FROM (
    SELECT key, rollout, phase, COALESCE(ended, updated) AS ended,
        ROW_NUMBER() OVER (PARTITION BY key ORDER BY started DESC, updated DESC) AS n,
        ROW_NUMBER() OVER (PARTITION BY key, phase = 'Failed'
                           ORDER BY started DESC, updated DESC) AS m
    FROM rollouts)
WHERE n > 1 AND (
    (phase = 'Failed' AND (m > :failed_keep OR ended < :now - :failed_max_age))
    OR (phase != 'Failed' AND (n > :keep OR ended < :now - :max_age)))
"""
"""Rollouts past their retention. The newest of a canary (``n = 1``) always stays; an
older one that never ended was superseded: its age counts from its last record."""


def _prune(db: sqlite3.Connection, now: float, keep: Retention) -> None:
    """Drop what :class:`Retention` no longer keeps, and sent messages older than a week.

    Every delete goes through an index: the history holds many rows per canary.
    """
    db.execute("DELETE FROM outbox WHERE status='sent' AND created < ?", (now - SENT_KEEP_SECONDS,))
    args = {
        "now": now,
        "keep": keep.keep,
        "max_age": keep.max_age,
        "failed_keep": keep.failed_keep,
        "failed_max_age": keep.failed_max_age,
    }
    db.execute("BEGIN IMMEDIATE")
    try:
        expired = db.execute(_EXPIRED, args).fetchall()
        for table in ("checks", "events", "rollouts"):
            db.executemany(f"DELETE FROM {table} WHERE key=? AND rollout=?", expired)
        cap = keep.checks_per_rollout
        long = db.execute("SELECT key, rollout FROM rollouts WHERE checks > ?", (cap,)).fetchall()
        for key, rollout in long:  # a long rollout keeps its newest checks and events
            _keep_newest(db, "checks", "key=? AND rollout=?", (key, rollout), cap)
            _keep_newest(db, "events", "key=? AND rollout=?", (key, rollout), cap)
        for (key,) in db.execute("SELECT key FROM canaries").fetchall():
            _keep_newest(db, "events", "key=? AND rollout IS NULL", (key,), retention.EVENTS_KEEP)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _keep_newest(
    db: sqlite3.Connection, table: str, where: str, args: tuple[Any, ...], n: int
) -> None:
    """Delete the rows of ``table`` matching ``where`` except the newest ``n``."""
    row = db.execute(
        f"SELECT id FROM {table} WHERE {where} ORDER BY id DESC LIMIT 1 OFFSET ?", (*args, n - 1)
    ).fetchone()
    if row is not None:
        db.execute(f"DELETE FROM {table} WHERE {where} AND id < ?", (*args, row[0]))


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns a database made by an older canaryd lacks."""
    for table, column, statement in _MIGRATIONS:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(statement)
    db.execute("CREATE INDEX IF NOT EXISTS events_rollout ON events(key, rollout, id)")


def _settle(db: sqlite3.Connection, key: str, how: str) -> None:
    """Release (``RELEASE``) or delete (``DROP``) a canary's held messages; forget its routes."""
    if how == RELEASE:
        db.execute("UPDATE outbox SET status='pending' WHERE status='held' AND key=?", (key,))
    else:
        db.execute("DELETE FROM outbox WHERE status='held' AND key=?", (key,))
    db.execute("DELETE FROM pending_routes WHERE key=?", (key,))


_UPSERT_ROLLOUT = (
    "INSERT INTO rollouts(key, rollout, revision, phase, reason, metadata, started, ended, "
    "checks, failed, updated) VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(key, rollout) DO UPDATE "
    "SET revision=excluded.revision, phase=excluded.phase, reason=excluded.reason, "
    "metadata=excluded.metadata, started=excluded.started, ended=excluded.ended, "
    "checks=checks+excluded.checks, failed=failed+excluded.failed, updated=excluded.updated"
)


@dataclass(eq=False)
class _Write:
    """One queued :meth:`SqliteStore.save`: its rows and how it ended.

    ``ready`` is set when the save's batch is committed, or failed (``error``).
    """

    rows: _Rows
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # cheaper than anyio's
    error: BaseException | None = None


class SqliteStore:
    """:class:`StateStore` on one SQLite file in WAL mode.

    Every database call runs in the store's one thread, in the order asked: a
    caller that is cancelled stops waiting, its call still runs to its end
    before the next one starts, so the connection is never used by two threads
    at once, whoever cancels what.
    """

    def __init__(self, path: Path, *, timeout: float = 5.0) -> None:
        """Remember where the database lives; :meth:`open` opens it."""
        self.path = path
        self.timeout = timeout
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._queue: list[_Write] = []
        self._writing = False

    async def open(self) -> None:
        """Open (creating if needed) the database.

        Raises:
            StoreError: the file cannot be created or is not a canaryd database.
        """
        if self._thread is None:
            self._thread = ThreadPoolExecutor(1, thread_name_prefix="canaryd-store")
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
            _migrate(db)
        except sqlite3.Error:
            db.close()
            raise
        self._db = db

    async def close(self) -> None:
        """Close the database (idempotent)."""
        thread, self._thread = self._thread, None
        if self._db is not None:
            db, self._db = self._db, None
            assert thread is not None
            with anyio.CancelScope(shield=True):
                await asyncio.wrap_future(thread.submit(db.close))
        if thread is not None:
            thread.shutdown(wait=False)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Call ``fn(*args)`` in the store's thread, after every call asked before it.

        Raises:
            StoreError: the store is not open, or the call failed.
        """
        if self._thread is None:
            raise StoreError("state store is not open")
        try:
            return await asyncio.wrap_future(self._thread.submit(fn, *args))
        except (sqlite3.Error, OSError) as exc:
            raise self._error(exc) from exc

    def _error(self, exc: BaseException) -> BaseException:
        """The StoreError for a failure of a database call (other errors as they are)."""
        if isinstance(exc, sqlite3.Error):
            return StoreError(f"state store {self.path}: {exc}")
        if isinstance(exc, OSError):
            return StoreError(f"state store {self.path}: {exc.strerror or exc}")
        return exc

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
        *,
        routes: Sequence[dict[str, Any]] | None = None,
        settle: str | None = None,
    ) -> None:
        """Persist a decision atomically (see :class:`StateStore`); return once committed.

        Group commit: saves that arrive while a batch is being written wait and
        are then written together, each in its own savepoint of one transaction,
        so thousands of canaries cost one commit (and one thread hop) per batch
        instead of one per canary. A save that fails is rolled back alone.

        Raises:
            StoreError: nothing of this decision was written.
        """
        write = _Write(_Rows.encode(key, state, record, events, outbox, routes, settle))
        self._queue.append(write)
        if not self._writing:
            self._flush()
        try:
            await write.ready.wait()
        except BaseException:  # cancelled: withdraw it unless a batch already holds it
            if any(w is write for w in self._queue):
                self._queue.remove(write)
            raise
        if write.error is not None:
            raise write.error

    def _flush(self) -> None:
        """Send every queued save to the store's thread as one batch.

        The batch ends in :meth:`_flushed`, a callback: no task has to live until
        it is written, so cancelling any saver never leaves the others hanging.
        """
        batch, self._queue = self._queue, []
        if self._thread is None:
            self._finish(batch, StoreError("state store is not open"))
            return
        self._writing = True
        done = self._thread.submit(self._save_batch, [w.rows for w in batch])
        asyncio.wrap_future(done).add_done_callback(partial(self._flushed, batch))

    def _flushed(
        self, batch: list[_Write], done: asyncio.Future[list[BaseException | None]]
    ) -> None:
        """A batch is written (or failed): wake its savers, start the next batch."""
        self._writing = False
        if done.cancelled():
            self._finish(batch, StoreError("state store closed before the save was written"))
        elif (exc := done.exception()) is not None:  # the transaction failed: none was written
            self._finish(batch, self._error(exc))
        else:
            for w, error in zip(batch, done.result(), strict=True):
                w.error = error
                w.ready.set()
        if self._queue:
            self._flush()

    @staticmethod
    def _finish(batch: list[_Write], error: BaseException) -> None:
        """Wake every saver of a batch with the same error."""
        for w in batch:
            w.error = error
            w.ready.set()

    def _save_batch(self, writes: Sequence[_Rows]) -> list[BaseException | None]:
        """Write a batch in one transaction; returns each save's error (or None).

        Raises:
            sqlite3.Error: the transaction could not begin or commit (nothing written).
            StoreError: the store is not open.
        """
        db, now = self.db, time.time()
        db.execute("BEGIN IMMEDIATE")
        try:
            errors = [self._save_one(db, now, rows) for rows in writes]
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return errors

    def _save_one(self, db: sqlite3.Connection, now: float, rows: _Rows) -> BaseException | None:
        """One save in its own savepoint; a failure rolls back this save only."""
        db.execute("SAVEPOINT save")
        try:
            self._write(db, now, rows)
        except Exception as exc:
            if not db.in_transaction:  # SQLite rolled it all back (disk full, I/O error)
                raise
            db.execute("ROLLBACK TO save")
            db.execute("RELEASE save")
            return self._error(exc)
        db.execute("RELEASE save")
        return None

    @staticmethod
    def _write(db: sqlite3.Connection, now: float, rows: _Rows) -> None:
        if rows.settle is not None:
            _settle(db, rows.key, rows.settle)
        db.execute(
            "INSERT INTO canaries(key, state, updated) VALUES (?,?,?) "
            "ON CONFLICT(key) DO UPDATE SET state=excluded.state, "
            "updated=excluded.updated",
            (rows.key, rows.state, now),
        )
        if rows.record is not None:
            db.execute(
                "INSERT INTO checks(key, rollout, time, record) VALUES (?,?,?,?)",
                (rows.key, rows.rollout, *rows.record),
            )
        if rows.events:  # a statement costs even with no rows
            db.executemany(
                "INSERT INTO events(key, time, name, level, event, rollout) VALUES (?,?,?,?,?,?)",
                rows.events,
            )
        if rows.summary is not None:
            db.execute(_UPSERT_ROLLOUT, (*rows.summary, now))
        if rows.outbox:
            status = "pending" if rows.routes is None else "held"
            db.executemany(
                "INSERT OR IGNORE INTO outbox(key, idem, target, payload, created, next_at, "
                "status) VALUES (?,?,?,?,?,?,?)",
                [(*m, now, now, status) for m in rows.outbox],
            )
        if rows.routes is not None:
            db.execute(
                "INSERT INTO pending_routes(key, seq, routes) VALUES (?,?,?) ON CONFLICT(key) "
                "DO UPDATE SET seq=excluded.seq, routes=excluded.routes",
                (rows.key, rows.seq, rows.routes),
            )

    async def load_pending(self) -> dict[str, tuple[int, list[dict[str, Any]]]]:
        """Routes saved but not yet settled, by key (see :class:`StateStore`)."""
        rows = await self._run(
            lambda: self.db.execute("SELECT key, seq, routes FROM pending_routes").fetchall()
        )
        return {key: (seq, json.loads(raw)) for key, seq, raw in rows}

    async def history(self, key: str, limit: int = 20) -> list[dict[str, Any]]:
        """The most recent check records of a canary, newest first."""
        return await self._newest("record", "checks", key, limit)

    async def events(self, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """The most recent events of a canary, newest first."""
        return await self._newest("event", "events", key, limit)

    async def rollouts(self, key: str, limit: int = 50) -> list[dict[str, Any]]:
        """A canary's rollouts, newest first, as the API's ``RolloutSummary``."""
        sql = f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE key=? ORDER BY {_NEWEST} LIMIT ?"
        rows = await self._run(lambda: self.db.execute(sql, (key, limit)).fetchall())
        return [_rollout_dict(row, current=i == 0) for i, row in enumerate(rows)]

    async def rollout(self, key: str, rollout: str, limit: int = 2000) -> dict[str, Any] | None:
        """One rollout with its checks and events (oldest first), or None if unknown."""

        def _read() -> tuple[Any, ...] | None:
            row = self.db.execute(
                f"SELECT {_ROLLOUT_COLUMNS} FROM rollouts WHERE key=? AND rollout=?", (key, rollout)
            ).fetchone()
            if row is None:
                return None
            newest = self.db.execute(
                f"SELECT rollout FROM rollouts WHERE key=? ORDER BY {_NEWEST} LIMIT 1", (key,)
            ).fetchone()
            checks, events = (
                self.db.execute(
                    f"SELECT {col} FROM (SELECT id, {col} FROM {table} WHERE key=? AND rollout=? "
                    "ORDER BY id DESC LIMIT ?) ORDER BY id",
                    (key, rollout, limit),
                ).fetchall()
                for col, table in (("record", "checks"), ("event", "events"))
            )
            return row, newest[0] == rollout, checks, events

        found = await self._run(_read)
        if found is None:
            return None
        row, current, checks, events = found
        body = _rollout_dict(row, current=current)
        body["checks"] = [json.loads(r[0]) for r in checks]
        body["events"] = [json.loads(r[0]) for r in events]
        return body

    async def _newest(self, column: str, table: str, key: str, limit: int) -> list[dict[str, Any]]:
        """The JSON ``column`` of a canary's newest ``limit`` rows of ``table``, newest first."""
        sql = f"SELECT {column} FROM {table} WHERE key=? ORDER BY id DESC LIMIT ?"
        rows = await self._run(lambda: self.db.execute(sql, (key, limit)).fetchall())
        return [json.loads(r[0]) for r in rows]

    async def prune(self, now: float | None = None, keep: Retention | None = None) -> None:
        """Drop past rollouts beyond ``keep`` (with their checks and events), and old sent messages.

        See :class:`Retention`; a canary's newest rollout is never dropped.
        """
        now = time.time() if now is None else now
        keep = keep or Retention()
        await self._run(partial(_prune, self.db, now, keep))

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
