"""``canaryd state copy``: SQLite to PostgreSQL and back, nothing lost (docs/ha.md)."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from postgres import PostgresServer

from canaryd.cli import main
from canaryd.core.analysis import CanaryState, CheckRecord, Outcome, Phase
from canaryd.core.events import Event
from canaryd.errors import StoreError
from canaryd.service.lease import Lease
from canaryd.service.statecopy import TABLES, copy_state
from canaryd.service.store import SqliteStore, StateStore
from canaryd.service.store.postgres import PostgresStore, first_line

pytestmark = pytest.mark.anyio


def message(n: int) -> Any:
    """The n-th outbox message of prod/web."""
    from canaryd.service.store import OutboxMessage

    return OutboxMessage("prod/web", f"prod/web:r1:{n}:0:alert:a", "alert:a", {"n": n})


async def fill(store: StateStore) -> None:
    """Decisions of two canaries: records, events, sent/dead/pending messages, held routes."""
    event = Event("rollout.started", "prod/web", "v2", "Progressing", 5.0, {"x": 1})
    for n in range(3):
        state = CanaryState(phase=Phase.PROGRESSING, revision="v2", rollout_id="r1", seq=n + 1)
        rec = CheckRecord(float(n), n, Outcome.PASS, 0, 1, 0, None)
        await store.save("prod/web", state, rec, [event], [message(n)])
    await store.save("prod/api", CanaryState(seq=1), None, [], [message(9)], routes=[{"w": 1}])
    await store.mark((await all_due(store))[0].id, "sent")
    await store.mark((await all_due(store))[0].id, "dead", error="gone")


async def all_due(store: StateStore) -> list[Any]:
    """Every pending message due now, oldest first, one per canary at a time."""
    return await store.due(float("inf"), 1000)


async def snapshot(store: StateStore) -> dict[str, Any]:
    """What the daemon reads back from a store."""
    return {
        "states": await store.load_states(),
        "pending": await store.load_pending(),
        "history": await store.history("prod/web", 10),
        "events": await store.events("prod/web", 10),
        "due": [(m.idempotency_key, m.payload, m.attempts) for m in await all_due(store)],
        "stats": (await store.outbox_stats())["counts"],
        "rollouts": await store.rollouts("prod/web"),
        "rollout": await store.rollout("prod/web", "r1"),
    }


async def test_sqlite_to_postgresql_and_back_keeps_everything(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """State, history, events, the outbox (statuses, keys, order) and held routes survive."""
    lite = SqliteStore(tmp_path / "a.db")
    await lite.open()
    await fill(lite)
    before = await snapshot(lite)
    await lite.close()
    url = postgres.create_database()
    counts = await anyio.to_thread.run_sync(copy_state, f"sqlite://{tmp_path}/a.db", url)
    assert counts == {
        "canaries": 2,
        "checks": 3,
        "events": 3,
        "rollouts": 1,
        "outbox": 4,
        "pending_routes": 1,
    }
    pg = PostgresStore(url)
    await pg.open()
    try:
        assert await snapshot(pg) == before
        await pg.save(
            "prod/web", CanaryState(seq=9), CheckRecord(9.0, 9, Outcome.PASS, 0, 1, 0, None), [], []
        )
        assert (await pg.history("prod/web", 1))[0]["tick"] == 9  # ids continue after the copy
    finally:
        await pg.close()
    assert await anyio.to_thread.run_sync(main, ["state", "copy", url, str(tmp_path / "b.db")]) == 0
    back = SqliteStore(tmp_path / "b.db")
    await back.open()
    try:
        assert (await back.load_states())["prod/web"].seq == 9
        assert (await snapshot(back))["due"] == before["due"]
    finally:
        await back.close()


def rows(conn: Any) -> dict[str, list[tuple[Any, ...]]]:
    """Every copied column of every row of every copied table, in key order."""
    return {
        table: conn.execute(
            f"SELECT {', '.join(columns)} FROM {table} ORDER BY {', '.join(columns[:2])}"
        ).fetchall()
        for table, columns in TABLES.items()
    }


async def test_every_column_of_every_table_survives_a_round_trip(
    tmp_path: Path, postgres: PostgresServer
) -> None:
    """SQLite to PostgreSQL to SQLite gives back every row, column for column; the copy leaves
    out no table or column of either schema but PostgreSQL's lease and writers' epochs."""
    lite = SqliteStore(tmp_path / "a.db")
    await lite.open()
    await fill(lite)
    await lite.close()
    url = postgres.create_database()
    await anyio.to_thread.run_sync(copy_state, f"sqlite://{tmp_path}/a.db", url)
    await anyio.to_thread.run_sync(copy_state, url, f"sqlite://{tmp_path}/b.db")
    with sqlite3.connect(tmp_path / "a.db") as a, sqlite3.connect(tmp_path / "b.db") as b:
        before, after = rows(a), rows(b)
        lite_columns = {
            (t, c[1])
            for (t,) in a.execute("SELECT name FROM sqlite_master WHERE type='table'")
            for c in a.execute(f"PRAGMA table_info({t})")
        }
    with psycopg.connect(url) as pg:
        between = rows(pg)
        pg_columns = set(
            pg.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = 'public'"
            ).fetchall()
        )
    assert all(before.values()) and before == after
    assert {t: [tuple(r) for r in v] for t, v in between.items()} == before
    copied = {(t, c) for t, columns in TABLES.items() for c in columns}
    assert lite_columns == copied
    left_out = {(t, c) for t, c in pg_columns - copied if c != "epoch"}
    assert {t for t, _ in left_out} == {"lease", "schema_version"}, left_out


async def test_a_destination_holding_state_is_refused(tmp_path: Path) -> None:
    """Copying into a store that already has state changes nothing and says why."""
    for name in ("a.db", "b.db"):
        s = SqliteStore(tmp_path / name)
        await s.open()
        await s.save("prod/web", CanaryState(seq=1 if name == "a.db" else 7), None, [], [])
        await s.close()
    with pytest.raises(StoreError, match="already holds state"):
        await anyio.to_thread.run_sync(
            copy_state, f"sqlite://{tmp_path}/a.db", f"sqlite://{tmp_path}/b.db"
        )
    args = ["state", "copy", str(tmp_path / "a.db"), str(tmp_path / "b.db")]
    assert await anyio.to_thread.run_sync(main, args) == 1
    s = SqliteStore(tmp_path / "b.db")
    await s.open()
    assert (await s.load_states())["prod/web"].seq == 7  # untouched
    await s.close()


async def test_an_address_libpq_cannot_read_is_refused_without_its_password(
    tmp_path: Path,
) -> None:
    """A source address libpq cannot parse (it repeats the bad part) is a StoreError that
    does not show the password."""
    url = "postgresql://canaryd:s3cr%zzet@127.0.0.1:9/c"
    with pytest.raises(StoreError, match="state copy failed") as caught:
        await anyio.to_thread.run_sync(copy_state, url, f"sqlite://{tmp_path}/b.db")
    assert "s3cr" not in str(caught.value)


async def test_a_destination_libpq_cannot_read_is_said_without_its_password(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """``canaryd state copy`` to an address libpq cannot parse fails at once, and neither its
    output nor any library's log line shows the password."""
    lite = SqliteStore(tmp_path / "a.db")
    await lite.open()
    await lite.close()
    url = "postgresql://canaryd:s3cr%zzet@127.0.0.1:9/c"
    args = ["state", "copy", str(tmp_path / "a.db"), url]
    assert await anyio.to_thread.run_sync(main, args) == 1
    out, err = capfd.readouterr()
    assert "invalid percent-encoded token" in err, err
    assert "s3cr" not in out + err + caplog.text, (out, err, caplog.text)


async def test_a_running_replica_is_refused(tmp_path: Path, postgres: PostgresServer) -> None:
    """A PostgreSQL store whose leader lease is live is not copied from (a replica still writes)."""
    url = postgres.create_database()
    store = PostgresStore(url)
    await store.open()
    await store.close()
    lease = Lease(url, ttl=30.0)
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        assert await lease.attempt(conn) is not None
    with pytest.raises(StoreError, match="stop it first"):
        await anyio.to_thread.run_sync(copy_state, url, f"sqlite://{tmp_path}/c.db")


@pytest.mark.parametrize(
    ("error", "shown"),
    [
        (
            psycopg.OperationalError("connection failed: refused\nDETAIL: more"),
            "connection failed: refused",
        ),
        (psycopg.OperationalError(""), "OperationalError"),
        (psycopg.OperationalError("  \n "), "OperationalError"),
    ],
    ids=["first-line", "empty", "blank"],
)
async def test_a_database_error_is_shown_by_its_first_line_or_its_type(
    error: Exception, shown: str
) -> None:
    """Store, lease and copy messages show a database error's first line; one that says
    nothing is named by its type (never an IndexError instead of the StoreError)."""
    assert first_line(error) == shown
