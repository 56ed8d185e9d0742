"""``canaryd state copy SRC DST``: move state between SQLite and PostgreSQL (docs/ha.md).

Copies every canary state, check record, event, outbox message (status,
attempts and idempotency key included, so nothing is sent twice under another
key and dead letters stay dead) and recorded-but-unsettled route, keeping row
ids (hence the outbox's order). The destination must hold no state yet; the
source is only read. Every canaryd using either store must be stopped: a
PostgreSQL store whose leader lease is live is refused.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import anyio

from canaryd.config.models import POSTGRES_SCHEMES
from canaryd.errors import StoreError
from canaryd.redact import redact_dsn
from canaryd.service.store.sqlite import tables

TABLES = tables()
"""What is copied, table by table, column by column: every table and column of the schema
both stores share (the lease is not: it belongs to running replicas)."""


def _is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite://"))


async def _create_schema(url: str) -> None:
    """Open the store once: it creates (or migrates) its schema."""
    from canaryd.service.store import SqliteStore
    from canaryd.service.store.postgres import PostgresStore

    store = PostgresStore(url) if _is_postgres(url) else SqliteStore(_sqlite_path(url))
    await store.open()
    await store.close()


@contextmanager
def _connect(url: str) -> Iterator[Any]:
    """A plain DB-API connection (committed on success, rolled back on error)."""
    if _is_postgres(url):
        import psycopg

        with psycopg.connect(url, connect_timeout=10) as pg:  # commits or rolls back
            yield pg
        return
    with closing(sqlite3.connect(_sqlite_path(url), timeout=10)) as lite, lite:
        yield lite


def _marker(url: str) -> str:
    return "%s" if _is_postgres(url) else "?"


def _refuse_live_lease(url: str, conn: Any) -> None:
    if _is_postgres(url):
        live = conn.execute("SELECT holder FROM lease WHERE expires_at > now()").fetchall()
        if live:
            where = redact_dsn(url)
            raise StoreError(f"a canaryd replica ({live[0][0]}) runs on {where}: stop it first")


def _copy_table(src: Any, dst: Any, dst_url: str, table: str) -> int:
    columns = TABLES[table]
    names = ", ".join(columns)
    order = "id" if "id" in columns else ", ".join(columns[:2])
    rows = src.execute(f"SELECT {names} FROM {table} ORDER BY {order}").fetchall()
    if rows:
        marks = ", ".join([_marker(dst_url)] * len(columns))
        dst.cursor().executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", rows)
    if "id" in columns and rows and _is_postgres(dst_url):  # identity continues after the copy
        dst.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {rows[-1][0]})")
    return len(rows)


def copy_state(src: str, dst: str) -> dict[str, int]:
    """Copy every row of ``src`` into the empty store ``dst``; return rows copied per table.

    Raises:
        StoreError: a store cannot be opened, ``dst`` is not empty, a replica runs.
    """
    if not _is_postgres(src) and not _sqlite_path(src).is_file():
        raise StoreError(f"no state file at {_sqlite_path(src)}")
    anyio.run(_create_schema, dst)
    try:
        with _connect(src) as s, _connect(dst) as d:
            _refuse_live_lease(src, s)
            _refuse_live_lease(dst, d)
            for table in TABLES:
                if d.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall():
                    raise StoreError(f"{redact_dsn(dst)} already holds state ({table}): not copied")
            return {table: _copy_table(s, d, dst, table) for table in TABLES}
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"state copy failed: {exc}") from exc
    except Exception as exc:
        if type(exc).__module__.startswith("psycopg"):
            from canaryd.service.store.postgres import first_line

            raise StoreError(f"state copy failed: {first_line(exc, src, dst)}") from exc
        raise
