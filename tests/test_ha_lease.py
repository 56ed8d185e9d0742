"""The leader lease and fenced writes, on a real PostgreSQL (docs/ha.md)."""

from __future__ import annotations

from dataclasses import dataclass

import anyio
import psycopg
import pytest
from postgres import PostgresServer

from canaryd.core.analysis import CanaryState
from canaryd.errors import FencedError
from canaryd.redact import redact_dsn
from canaryd.service.lease import Lease
from canaryd.service.store import OutboxMessage
from canaryd.service.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio


@dataclass
class Clock:
    """A monotonic clock the test moves by hand."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def url(postgres: PostgresServer) -> str:
    """A new database with canaryd's schema."""
    url = postgres.create_database()
    store = PostgresStore(url)
    await store.open()
    await store.close()
    return url


async def attempt(lease: Lease, url: str) -> int | None:
    """One take-or-renew of ``lease``."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return await lease.attempt(conn)


async def test_one_replica_holds_the_lease_until_it_expires_by_the_database_clock(
    url: str,
) -> None:
    """A second replica cannot take a live lease; once it expires it takes it with a new epoch."""
    a, b = Lease(url, address="http://a", ttl=1.0), Lease(url, address="http://b", ttl=1.0)
    first = await attempt(a, url)
    assert first is not None
    assert await attempt(b, url) is None
    assert b.leader is not None and b.leader.address == "http://a"
    await anyio.sleep(1.2)
    second = await attempt(b, url)
    assert second == first + 1
    assert await attempt(a, url) is None
    assert a.lost and not a.leading


async def test_renewing_keeps_the_epoch(url: str) -> None:
    """A leader that renews in time keeps its epoch (its writes in flight stay valid)."""
    a = Lease(url, ttl=5.0)
    epochs = [await attempt(a, url) for _ in range(3)]
    assert epochs[0] is not None and epochs == [epochs[0]] * 3


async def test_a_leader_stops_deciding_before_its_lease_can_expire(url: str) -> None:
    """Past ttl minus a margin on its own clock a leader holds no epoch, though the row is live."""
    clock = Clock()
    a = Lease(url, ttl=30.0, clock=clock)
    assert await attempt(a, url) is not None
    clock.now += 30.0 * 5 / 6
    assert a.epoch is None and a.lost
    store = PostgresStore(url, fence=a)
    await store.open()
    try:
        with pytest.raises(FencedError):
            await store.save("prod/web", CanaryState(), None, [], [])
        assert "prod/web" not in await store.load_states()
    finally:
        await store.close()


async def test_a_paused_then_resumed_old_leader_cannot_write(url: str) -> None:
    """Once another replica took the lease, the old leader's state and outbox writes are refused."""
    old, new = Lease(url, ttl=1.0), Lease(url, ttl=1.0)
    assert await attempt(old, url) is not None
    stale = PostgresStore(url, fence=old)
    await stale.open()
    try:
        await anyio.sleep(1.2)  # "paused" past its lease
        assert await attempt(new, url) is not None
        old._deadline = float("inf")  # as if its local clock had not noticed the pause
        message = OutboxMessage("prod/web", "prod/web:r1:1:0:alert:a", "alert:a", {"x": 1})
        with pytest.raises(FencedError, match="stale"):
            await stale.save("prod/web", CanaryState(ticks=1), None, [], [message])
        assert stale.fenced_writes == 1
        assert "prod/web" not in await stale.load_states()
        assert await stale.due(float("inf")) == []
    finally:
        await stale.close()


async def test_the_new_leaders_writes_are_accepted(url: str) -> None:
    """The replica holding the current epoch writes, and its rows carry that epoch."""
    lease = Lease(url, ttl=5.0)
    epoch = await attempt(lease, url)
    store = PostgresStore(url, fence=lease)
    await store.open()
    try:
        await store.save("prod/web", CanaryState(ticks=3), None, [], [])
        assert (await store.load_states())["prod/web"].ticks == 3
    finally:
        await store.close()
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT epoch FROM canaries WHERE key='prod/web'").fetchone()
    assert row == (epoch,)


async def test_two_replicas_starting_together_migrate_once(postgres: PostgresServer) -> None:
    """Schema migrations run under a lock: concurrent starts both succeed, each version once."""
    url = postgres.create_database()
    stores = [PostgresStore(url) for _ in range(4)]
    async with anyio.create_task_group() as tg:
        for s in stores:
            tg.start_soon(s.open)
    for s in stores:
        await s.close()
    with psycopg.connect(url) as conn:
        versions = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
    assert versions == [(1,)]


async def test_errors_and_repr_never_show_the_password(postgres: PostgresServer) -> None:
    """A database URL's password appears neither in the store's errors nor in its repr."""
    url = f"postgresql://postgres:s3cret-pw@127.0.0.1:{postgres.port}/no_such_db"
    store = PostgresStore(url, timeout=3.0)
    with pytest.raises(Exception) as caught:
        await store.open()
    assert "s3cret-pw" not in str(caught.value)
    assert "s3cret-pw" not in repr(store)
    assert "s3cret-pw" not in redact_dsn(url)
