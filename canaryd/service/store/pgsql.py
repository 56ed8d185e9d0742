"""How the PostgreSQL store runs the shared plans' statements (:mod:`~.plans`) on a connection.

Statements use SQLite's ``?`` markers; they are rewritten here to psycopg's
``%s`` (:func:`_dialect`). An :class:`~.plans.Insert` is one statement for all its
rows. A decision's writes read nothing, so a batch of decisions goes to the
server as one query (:func:`execute_batch`, the store's group commit).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any, TypeVar

import psycopg

from canaryd.service.store.plans import Insert, Plan, Statement

T = TypeVar("T")

Conn = psycopg.AsyncConnection[Any]


async def drive(conn: Conn, plan: Plan[T]) -> T:
    """Run a plan's statements on ``conn``; return its answer.

    Raises:
        psycopg.Error: a statement failed.
    """
    try:
        step = next(plan)
        while True:
            if isinstance(step, Insert):
                await _insert(conn, step)
                step = plan.send([])
            else:
                cur = await conn.execute(_dialect(step[0]), step[1])
                step = plan.send(await cur.fetchall() if cur.description is not None else [])
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def execute_batch(conn: Conn, batch: Sequence[Sequence[Statement]]) -> None:
    """Run the statements of several decisions on ``conn`` in one round trip, in order.

    One query of many statements, its values bound on the client as psycopg's
    ``ClientCursor`` binds them (the connection's own quoting, ``as_literal``)
    but into templates parsed once (:func:`_dialect`): psycopg would parse the
    whole query again for each batch. The server runs the statements one after
    the other as if sent apart, and answers once. Not a pipeline, for the
    reason given in :func:`_insert`.

    Raises:
        psycopg.Error: a statement failed (the transaction is then aborted), or
            a value cannot be written (``psycopg.DataError``).
    """
    tx = psycopg.adapt.Transformer(conn)
    literal = tx.as_literal
    sql: list[bytes] = []
    for steps in batch:
        for step in steps:
            template, values = _composed(step)
            sql.append(template % tuple(b"NULL" if v is None else literal(v) for v in values))
    async with psycopg.AsyncClientCursor(conn) as cur:  # no values: sent as it is
        await cur.execute(b";".join(sql))


def _composed(step: Statement) -> tuple[bytes, Sequence[Any]]:
    """A statement's SQL with PostgreSQL's markers, and its values (an insert's in one)."""
    if not isinstance(step, Insert):
        return _dialect(step[0]), step[1]
    rows = step.rows
    return _values(step.head, len(rows[0]), len(rows), step.tail), [v for r in rows for v in r]


@lru_cache(maxsize=256)
def _dialect(sql: str) -> bytes:
    """A plan's statement with PostgreSQL's markers (``%s`` for ``?``)."""
    return sql.replace("%", "%%").replace("?", "%s").encode()


async def _insert(conn: Conn, insert: Insert) -> None:
    """Insert rows with one statement (not a pipeline: see below).

    psycopg's ``executemany`` pipelines its statements, and a session paused in
    the middle of a pipeline is *active*, not *idle in transaction*: the server
    would never end it, and its lock on the lease row would block the takeover
    (docs/ha.md).
    """
    sql = _values(insert.head, len(insert.rows[0]), len(insert.rows), insert.tail)
    await conn.execute(sql, [v for row in insert.rows for v in row])


@lru_cache(maxsize=256)
def _values(head: str, width: int, count: int, tail: str) -> bytes:
    """``head VALUES (%s,…),…tail``: ``count`` rows of ``width`` values."""
    one = "(" + ",".join(["%s"] * width) + ")"
    return f"{head} VALUES {','.join([one] * count)}{tail}".encode()
