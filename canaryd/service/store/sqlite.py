"""The SQLite store (WAL): the embedded default, for one machine.

A tick's new state, its check record, its events and the outbox messages it
caused are written in one transaction, so a crash (even ``kill -9``) leaves
either all of them or none. SQLite calls run in a worker thread, one at a time;
the statements are the plans both stores share (:mod:`~.plans`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
from functools import cache, partial
from pathlib import Path
from typing import Any, TypeVar

import anyio

from canaryd.errors import StoreError
from canaryd.service.store import plans
from canaryd.service.store.codec import DecisionRows
from canaryd.service.store.plans import Insert, Plan, PlannedStore, Statement

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


def drive(db: sqlite3.Connection, plan: Plan[T]) -> T:
    """Run a plan's statements on ``db``; return its answer.

    Raises:
        sqlite3.Error: a statement failed.
    """
    try:
        step = next(plan)
        while True:
            if isinstance(step, Insert):
                db.executemany(step.one(), step.rows)
                step = plan.send([])
            else:
                step = plan.send(db.execute(*step).fetchall())
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """Hold a write transaction on ``db``: committed at the end, rolled back on any error.

    Raises:
        sqlite3.Error: the transaction could not begin or commit (nothing written).
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def execute(db: sqlite3.Connection, steps: Sequence[Statement]) -> None:
    """Run statements that read nothing (:func:`~.plans.write_decision`) on ``db``.

    Raises:
        sqlite3.Error: a statement failed.
    """
    for step in steps:
        if isinstance(step, Insert):
            db.executemany(step.one(), step.rows)
        else:
            db.execute(*step)


def _migrate(db: sqlite3.Connection) -> None:
    """Add the columns a database made by an older canaryd lacks."""
    for table, column, statement in _MIGRATIONS:
        have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
        if column not in have:
            db.execute(statement)
    db.execute("CREATE INDEX IF NOT EXISTS events_rollout ON events(key, rollout, id)")


@cache
def tables() -> dict[str, tuple[str, ...]]:
    """Every table of the schema both stores share, with its columns in order.

    Read from :data:`_SCHEMA` and its migrations, so ``canaryd state copy`` copies a
    column as soon as the stores have it (PostgreSQL adds only its ``lease``, its
    ``schema_version`` and each row's writer ``epoch``: docs/ha.md).
    """
    with closing(sqlite3.connect(":memory:")) as db:
        db.executescript(_SCHEMA)
        _migrate(db)
        names = db.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY rowid")
        return {
            table: tuple(row[1] for row in db.execute(f"PRAGMA table_info({table})"))
            for (table,) in names.fetchall()
        }


COMMIT_SPACING = 0.01
"""Seconds from one batch's start to the next at the least (docs/design.md, "A tick").

Saves that arrive within this time of the last batch wait for the next one:
under load, commits are paced at 100 a second and each carries every save
queued meanwhile, which costs far less CPU than many small transactions (the
same pages written once, one thread hop). A save that finds the store idle
for longer is written at once, so a quiet daemon adds no delay."""


@dataclass(eq=False)
class _Write:
    """One queued :meth:`SqliteStore.save`: its rows and how it ended.

    ``ready`` is set when the save's batch is committed, or failed (``error``).
    """

    rows: DecisionRows
    ready: asyncio.Event = field(default_factory=asyncio.Event)  # cheaper than anyio's
    error: BaseException | None = None


class SqliteStore(PlannedStore):
    """:class:`~.contract.StateStore` on one SQLite file in WAL mode.

    Every database call runs in the store's one thread, in the order asked: a
    caller that is cancelled stops waiting, its call still runs to its end
    before the next one starts, so the connection is never used by two threads
    at once, whoever cancels what.
    """

    def __init__(
        self, path: Path, *, timeout: float = 5.0, spacing: float = COMMIT_SPACING
    ) -> None:
        """Remember where the database lives; :meth:`open` opens it."""
        self.path = path
        self.timeout = timeout
        self.spacing = spacing
        self._db: sqlite3.Connection | None = None
        self._thread: ThreadPoolExecutor | None = None
        self._queue: list[_Write] = []
        self._last_batch = float("-inf")  # the event loop's time the last batch started
        self._paced: asyncio.TimerHandle | None = None
        self._batch: asyncio.Future[list[BaseException | None]] | None = None  # being written

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
        """Finish the batch being written or waiting, close the database (idempotent)."""
        self._flush_paced()
        if self._batch is not None:  # bounded: the batch's statements wait ``timeout`` at most
            await asyncio.wait([self._batch], timeout=self.timeout + 1.0)
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
        self._flush_paced()  # calls run in the order asked: saves made before this one first
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

    async def read(self, plan: Plan[T]) -> T:
        """Run a plan that only reads, in the store's thread (see :class:`~.plans.PlannedStore`).

        Raises:
            StoreError: the store is not open, or a statement failed.
        """
        return await self._run(self._drive, plan, False)

    async def change(self, plan: Plan[T]) -> T:
        """Run a plan that writes, in one transaction in the store's thread.

        Raises:
            StoreError: the store is not open, or a statement failed; nothing was written.
        """
        return await self._run(self._drive, plan, True)

    def _drive(self, plan: Plan[T], transaction: bool) -> T:
        """Run a plan on the connection, in a transaction when asked."""
        if not transaction:
            return drive(self.db, plan)
        with _transaction(self.db) as db:
            return drive(db, plan)

    async def commit(self, rows: DecisionRows) -> None:
        """Write one decision's rows; return once they are committed.

        Group commit: saves that arrive while a batch is being written, or
        within :data:`COMMIT_SPACING` of its start, wait and are then written
        together, each in its own savepoint of one transaction, so thousands of
        canaries cost one commit (and one thread hop) per batch instead of one
        per canary. A save that fails is rolled back alone.

        Raises:
            StoreError: nothing of this decision was written.
        """
        write = _Write(rows)
        self._queue.append(write)
        if self._batch is None and self._paced is None:  # nothing written or waiting
            self._next_batch()
        try:
            await write.ready.wait()
        except BaseException:  # cancelled: withdraw it unless a batch already holds it
            if any(w is write for w in self._queue):
                self._queue.remove(write)
            raise
        if write.error is not None:
            raise write.error

    def _next_batch(self) -> None:
        """Start a batch now, or when :data:`COMMIT_SPACING` has passed since the last one."""
        loop = asyncio.get_running_loop()
        due = self._last_batch + self.spacing
        if loop.time() >= due:
            self._flush()
        else:
            self._paced = loop.call_at(due, self._flush)

    def _flush_paced(self) -> None:
        """Start the batch waiting for its time now."""
        if self._paced is not None:
            self._paced.cancel()
            self._flush()

    def _flush(self) -> None:
        """Send every queued save to the store's thread as one batch.

        The batch ends in :meth:`_flushed`, a callback: no task has to live until
        it is written, so cancelling any saver never leaves the others hanging.
        """
        self._paced = None
        batch, self._queue = self._queue, []
        if not batch:  # every save of it was withdrawn while it waited
            return
        self._last_batch = asyncio.get_running_loop().time()
        if self._thread is None:
            self._finish(batch, StoreError("state store is not open"))
            return
        done = self._thread.submit(self._save_batch, [w.rows for w in batch])
        self._batch = asyncio.wrap_future(done)
        self._batch.add_done_callback(partial(self._flushed, batch))

    def _flushed(
        self, batch: list[_Write], done: asyncio.Future[list[BaseException | None]]
    ) -> None:
        """A batch is written (or failed): wake its savers, start the next batch."""
        self._batch = None
        if done.cancelled():
            self._finish(batch, StoreError("state store closed before the save was written"))
        elif (exc := done.exception()) is not None:  # the transaction failed: none was written
            self._finish(batch, self._error(exc))
        else:
            for w, error in zip(batch, done.result(), strict=True):
                w.error = error
                w.ready.set()
        if self._queue:
            self._next_batch()

    @staticmethod
    def _finish(batch: list[_Write], error: BaseException) -> None:
        """Wake every saver of a batch with the same error."""
        for w in batch:
            w.error = error
            w.ready.set()

    def _save_batch(self, writes: Sequence[DecisionRows]) -> list[BaseException | None]:
        """Write a batch in one transaction; returns each save's error (or None).

        Raises:
            sqlite3.Error: the transaction could not begin or commit (nothing written).
            StoreError: the store is not open.
        """
        now = time.time()
        with _transaction(self.db) as db:
            return [self._save_one(db, now, rows) for rows in writes]

    def _save_one(
        self, db: sqlite3.Connection, now: float, rows: DecisionRows
    ) -> BaseException | None:
        """One save in its own savepoint; a failure rolls back this save only."""
        db.execute("SAVEPOINT save")
        try:
            execute(db, plans.write_decision(rows, now))
        except Exception as exc:
            if not db.in_transaction:  # SQLite rolled it all back (disk full, I/O error)
                raise
            db.execute("ROLLBACK TO save")
            db.execute("RELEASE save")
            return self._error(exc)
        db.execute("RELEASE save")
        return None
