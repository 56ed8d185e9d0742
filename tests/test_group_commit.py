"""Group commit (canaryd.service.store.group) alone, and in the PostgreSQL store's batches."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import anyio
import psycopg
import pytest
from postgres import PostgresServer, query
from structlog.testing import capture_logs

from canaryd.core.analysis import CanaryState, CheckRecord, Outcome
from canaryd.core.events import Event
from canaryd.errors import StoreError
from canaryd.service.lease import Lease
from canaryd.service.store import OutboxMessage
from canaryd.service.store.codec import DecisionRows
from canaryd.service.store.group import GroupCommit, Outcomes
from canaryd.service.store.postgres import PostgresStore

pytestmark = pytest.mark.anyio


class Writer:
    """A batch writer that records its batches, takes ``delay`` s, and fails items named ``bad``."""

    def __init__(self, delay: float = 0.0, fail: BaseException | None = None) -> None:
        self.delay, self.fail = delay, fail
        self.batches: list[list[str]] = []
        self.running = self.overlaps = 0

    async def __call__(self, batch: Sequence[str]) -> Outcomes:
        self.running += 1
        self.overlaps += self.running > 1
        try:
            await asyncio.sleep(self.delay)
            if self.fail is not None:
                raise self.fail
            self.batches.append(list(batch))
            return [ValueError(i) if i.startswith("bad") else None for i in batch]
        finally:
            self.running -= 1


async def submit_all(group: GroupCommit[str], items: Sequence[str]) -> dict[str, str]:
    """Submit every item concurrently; each item's outcome (``ok`` or its error's text)."""
    outcomes: dict[str, str] = {}

    async def one(item: str) -> None:
        try:
            await group.submit(item)
            outcomes[item] = "ok"
        except Exception as exc:
            outcomes[item] = f"{type(exc).__name__}: {exc}"

    async with anyio.create_task_group() as tg:
        for item in items:
            tg.start_soon(one, item)
    return outcomes


async def test_saves_arriving_together_are_written_in_few_batches_of_at_most_the_limit() -> None:
    """Saves queued while a batch is written go together in the next, in order, never over limit."""
    writer = Writer(delay=0.01)
    items = [f"c{i}" for i in range(50)]
    outcomes = await submit_all(GroupCommit(writer, limit=20), items)
    assert outcomes == dict.fromkeys(items, "ok")
    assert [i for b in writer.batches for i in b] == items
    assert len(writer.batches) <= 4 and max(map(len, writer.batches)) == 20
    assert writer.overlaps == 0


async def test_each_saver_is_told_its_own_outcome() -> None:
    """A save the batch writer reports failed raises its error; the others return."""
    outcomes = await submit_all(GroupCommit(Writer(delay=0.01), limit=100), ["a", "bad1", "b"])
    assert outcomes == {"a": "ok", "bad1": "ValueError: bad1", "b": "ok"}


async def test_a_batch_that_fails_as_a_whole_fails_every_save_in_it() -> None:
    """When the batch writer raises, every save of the batch raises that error."""
    group = GroupCommit(Writer(fail=StoreError("disk full")), limit=100)
    outcomes = await submit_all(group, ["a", "b", "c"])
    assert outcomes == dict.fromkeys("abc", "StoreError: disk full")


async def test_a_writer_cancelled_natively_mid_batch_still_tells_every_saver() -> None:
    """The saver writing a batch, cancelled as the scheduler abandons a tick, strands nobody."""
    writer = Writer(delay=0.05)
    group = GroupCommit(writer, limit=100)
    first = asyncio.ensure_future(group.submit("first"))
    await asyncio.sleep(0.01)  # its batch is being written
    rest = [asyncio.ensure_future(group.submit(f"c{i}")) for i in range(5)]
    await asyncio.sleep(0)
    first.cancel()
    with anyio.fail_after(5):
        await asyncio.gather(*rest)
    assert first.cancelled()
    assert writer.batches == [["first"], [f"c{i}" for i in range(5)]]
    assert writer.overlaps == 0


async def test_a_cancelled_waiting_save_is_withdrawn_and_the_baton_passes_on() -> None:
    """A queued save cancelled before its batch (even one handed the next batch) is never
    written, and the saves behind it still are."""
    writer = Writer(delay=0.05)
    group = GroupCommit(writer, limit=100)
    first = asyncio.ensure_future(group.submit("first"))
    await asyncio.sleep(0.01)
    gone = asyncio.ensure_future(group.submit("gone"))  # will be handed the next batch
    rest = [asyncio.ensure_future(group.submit(f"c{i}")) for i in range(3)]
    await asyncio.sleep(0.01)
    gone.cancel()
    with anyio.fail_after(5):
        await asyncio.gather(first, *rest)
    assert gone.cancelled()
    assert writer.batches == [["first"], ["c0", "c1", "c2"]]


# --------------------------------------------------------------------------- on PostgreSQL


def record(i: int) -> CheckRecord:
    """A passing check record."""
    return CheckRecord(1.0, i, Outcome.PASS, 10, 1, 0, None)


async def take(lease: Lease, url: str) -> None:
    """Take ``lease`` on ``url``."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        assert await lease.attempt(conn) is not None


async def leading_store(url: str, ttl: float = 30.0) -> PostgresStore:
    """An open store on ``url`` (schema created), fenced by a lease it then takes."""
    store = PostgresStore(url, fence=(lease := Lease(url, ttl=ttl)))
    await store.open()
    await take(lease, url)
    return store


async def save_all(store: PostgresStore, keys: Sequence[str]) -> dict[str, str]:
    """Save a decision (state, record, event, message) for each key concurrently; outcomes."""
    outcomes: dict[str, str] = {}

    async def one(i: int, key: str) -> None:
        message = OutboxMessage(key, f"{key}:r1:{i}:alert", "alert:a", {"n": i, "t": "it's 100%"})
        event = Event("rollout.started", key, "r1", "Progressing", 1.0, {"n": i})
        try:
            await store.save(key, CanaryState(ticks=i), record(i), [event], [message])
            outcomes[key] = "ok"
        except StoreError as exc:
            outcomes[key] = type(exc).__name__

    async with anyio.create_task_group() as tg:
        for i, key in enumerate(keys):
            tg.start_soon(one, i, key)
    return outcomes


@pytest.mark.integration
async def test_concurrent_fenced_saves_share_transactions_and_are_all_read_back(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Concurrent saves go in a few fenced batches; every row is stored, with the epoch."""
    url = postgres.create_database()
    store = await leading_store(url)
    sizes: list[int] = []
    real = store._write

    async def counting(batch: Sequence[DecisionRows], epoch: int, conn: Any) -> None:
        sizes.append(len(batch))
        await real(batch, epoch, conn)

    monkeypatch.setattr(store, "_write", counting)
    try:
        keys = [f"ns/c{i}" for i in range(100)]
        assert await save_all(store, keys) == dict.fromkeys(keys, "ok")
        assert sum(sizes) == 100 and len(sizes) < 20
        states = await store.load_states()
        assert {k: states[k].ticks for k in keys} == {k: i for i, k in enumerate(keys)}
        assert len(await store.due(float("inf"), limit=1000)) == 100
        assert [(e["event"], e["n"]) for e in await store.events("ns/c7")] == [
            ("rollout.started", 7)
        ]
        epochs = query(store, "SELECT DISTINCT epoch FROM canaries UNION SELECT epoch FROM outbox")
        assert epochs == [(store.epoch,)]
    finally:
        await store.close()


@pytest.mark.integration
async def test_a_stale_epoch_refuses_the_whole_batch(postgres: PostgresServer) -> None:
    """Every save of a batch by a replica whose lease was taken over is refused (and logged),
    none written."""
    url = postgres.create_database()
    stale = await leading_store(url, ttl=1.0)
    old = stale.fence
    assert isinstance(old, Lease)
    try:
        await anyio.sleep(1.2)
        await take(Lease(url, ttl=30.0), url)
        old._deadline = float("inf")  # as if its local clock had not noticed the pause
        keys = [f"ns/c{i}" for i in range(30)]
        with capture_logs() as logs:
            assert await save_all(stale, keys) == dict.fromkeys(keys, "FencedError")
        assert stale.fenced_writes == 30
        assert [e["event"] for e in logs].count("store.fenced") == 30  # one per refused write
        assert await stale.load_states() == {}
        assert await stale.due(float("inf")) == []
    finally:
        await stale.close()


@pytest.mark.integration
async def test_a_save_the_database_refuses_fails_alone_in_its_batch(
    postgres: PostgresServer,
) -> None:
    """A save whose rows PostgreSQL cannot hold (a NUL in text) fails; its batch-mates commit."""
    url = postgres.create_database()
    store = await leading_store(url)
    try:
        keys = [f"ns/c{i}" for i in range(20)] + ["ns/bad\x00"]
        outcomes = await save_all(store, keys)
        assert outcomes == {**dict.fromkeys(keys[:-1], "ok"), "ns/bad\x00": "StoreError"}
        assert set(await store.load_states()) == set(keys[:-1])
    finally:
        await store.close()


@pytest.mark.integration
async def test_a_lost_connection_fails_the_batch_without_retrying_each_save(
    postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the database fails the batch itself, every save in it raises StoreError at once."""
    url = postgres.create_database()
    store = await leading_store(url)
    calls: list[int] = []

    async def broken(batch: Sequence[object], epoch: int, conn: object) -> None:
        calls.append(len(batch))
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(store, "_write", broken)
    try:
        keys = [f"ns/c{i}" for i in range(10)]
        assert await save_all(store, keys) == dict.fromkeys(keys, "StoreError")
        assert sum(calls) == 10
    finally:
        await store.close()


class FlickeringFence:
    """A lease whose epoch is read as valid once, then as lost (the local deadline passing)."""

    def __init__(self, lease: Lease) -> None:
        self.lease, self.cluster, self.ttl, self.reads = lease, lease.cluster, lease.ttl, 0

    @property
    def epoch(self) -> int | None:
        """The lease's epoch on the first read, None on the later ones."""
        self.reads += 1
        return self.lease.epoch if self.reads == 1 else None


@pytest.mark.integration
async def test_rows_never_carry_an_epoch_the_fence_check_did_not_see(
    postgres: PostgresServer,
) -> None:
    """A leader whose epoch is lost while its batch is being fenced writes nothing rather than
    rows tagged with no epoch."""
    url = postgres.create_database()
    leader = await leading_store(url)
    assert isinstance(leader.fence, Lease)
    store = PostgresStore(url, fence=FlickeringFence(leader.fence))
    await store.open()
    try:
        outcome = await save_all(store, ["ns/c0"])
        rows = query(store, "SELECT epoch FROM canaries UNION ALL SELECT epoch FROM outbox")
        assert (outcome, rows) == ({"ns/c0": "FencedError"}, [])
    finally:
        await store.close()
        await leader.close()
