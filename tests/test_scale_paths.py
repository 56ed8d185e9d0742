"""What the scale work changed in the package: group commit, tick spreading, codec shortcuts."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import pytest

from canaryd.core.analysis import CanaryState, CheckRecord, Outcome, Phase
from canaryd.errors import StoreError
from canaryd.service.runtime import first_delay
from canaryd.service.store import (
    SENT_KEEP_SECONDS,
    OutboxMessage,
    SqliteStore,
    dumps,
    state_to_dict,
)
from canaryd.service.store.codec import DecisionRows

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """A real SQLite store in a temporary directory."""
    s = SqliteStore(tmp_path / "state.db")
    await s.open()
    yield s
    await s.close()


def stored_keys(path: Path) -> set[str]:
    """Keys of the canaries table, read through a separate connection."""
    with sqlite3.connect(path) as db:
        return {k for (k,) in db.execute("SELECT key FROM canaries")}


class BrokenRecord(CheckRecord):
    """A check record that cannot be encoded (stands in for any per-save failure)."""

    def as_dict(self) -> dict[str, Any]:
        """Fail like a bug in an encoder would."""
        raise ValueError("cannot encode")


def record() -> CheckRecord:
    """A passing check record."""
    return CheckRecord(1.0, 1, Outcome.PASS, 0, 1, 0, None)


async def test_concurrent_saves_are_committed_when_save_returns(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Each of many concurrent saves is on disk (seen by another connection) when it returns."""
    missing: list[str] = []

    async def save(i: int) -> None:
        key = f"ns/c{i}"
        await store.save(key, CanaryState(ticks=i), record(), [], [])
        if key not in stored_keys(tmp_path / "state.db"):
            missing.append(key)

    async with anyio.create_task_group() as tg:
        for i in range(200):
            tg.start_soon(save, i)
    assert missing == []
    assert len(stored_keys(tmp_path / "state.db")) == 200


async def test_saves_queued_together_share_one_transaction(
    store: SqliteStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Saves arriving while a batch is written are committed together, not one by one."""
    sizes: list[int] = []
    real = store._save_batch

    def counting(writes: Sequence[Any]) -> list[BaseException | None]:
        sizes.append(len(writes))
        return real(writes)

    monkeypatch.setattr(store, "_save_batch", counting)
    async with anyio.create_task_group() as tg:
        for i in range(100):
            tg.start_soon(store.save, f"ns/c{i}", CanaryState(), None, [], [])
    assert sum(sizes) == 100
    assert len(sizes) < 10


async def test_a_failing_save_does_not_undo_the_others_in_its_batch(
    store: SqliteStore, tmp_path: Path
) -> None:
    """One save that fails raises its own error; the saves batched with it are committed."""
    errors: dict[str, BaseException] = {}
    broken = BrokenRecord(1.0, 1, Outcome.FAIL, 0, 1, 1, "x")

    async def save(i: int) -> None:
        rec = broken if i == 5 else record()
        try:
            await store.save(f"ns/c{i}", CanaryState(), rec, [], [])
        except ValueError as exc:
            errors[f"ns/c{i}"] = exc

    async with anyio.create_task_group() as tg:
        for i in range(10):
            tg.start_soon(save, i)
    assert list(errors) == ["ns/c5"]
    assert stored_keys(tmp_path / "state.db") == {f"ns/c{i}" for i in range(10)} - {"ns/c5"}


async def test_saves_on_a_closed_store_all_fail_and_nothing_hangs(store: SqliteStore) -> None:
    """When the batch cannot be written, every save in it raises StoreError."""
    await store.close()
    failures: list[str] = []

    async def save(i: int) -> None:
        with pytest.raises(StoreError):
            await store.save(f"ns/c{i}", CanaryState(), None, [], [])
        failures.append(str(i))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(20):
                tg.start_soon(save, i)
    assert len(failures) == 20


async def test_store_keeps_working_after_a_cancelled_save(
    store: SqliteStore, tmp_path: Path
) -> None:
    """Cancelling waiting saves neither blocks later saves nor writes the withdrawn ones."""
    with anyio.move_on_after(0):
        async with anyio.create_task_group() as tg:
            for i in range(50):
                tg.start_soon(store.save, f"ns/gone{i}", CanaryState(), None, [], [])
    with anyio.fail_after(5):
        await store.save("ns/after", CanaryState(), None, [], [])
    assert "ns/after" in stored_keys(tmp_path / "state.db")


@pytest.mark.parametrize("interval", [0.5, 10.0, 3600.0], ids=["short", "10s", "hour"])
def test_first_ticks_spread_evenly_over_one_interval(interval: float) -> None:
    """First-tick delays are stable per key, inside [0, interval), and evenly spread."""
    delays = [first_delay(f"prod/svc-{i}", interval) for i in range(2000)]
    assert delays == [first_delay(f"prod/svc-{i}", interval) for i in range(2000)]
    assert all(0 <= d < interval for d in delays)
    tenths = [sum(1 for d in delays if k <= d / interval * 10 < k + 1) for k in range(10)]
    assert min(tenths) > 140 and max(tenths) < 260, tenths


def test_state_encoding_keeps_every_field() -> None:
    """The shallow state encoder gives what a deep copy of the dataclass would."""
    state = CanaryState(
        phase=Phase.PAUSED,
        revision="v2",
        rollout_id="abc",
        metadata={"ticket": "OPS-1"},
        canary_weight=20,
        primary_weight=80,
        approvals=frozenset({"promotion", "rollout"}),
        paused_phase=Phase.PROGRESSING,
        gate_since=12.5,
        seq=7,
    )
    expected = dataclasses.asdict(state)
    expected["approvals"] = ["promotion", "rollout"]
    assert json.loads(dumps(state_to_dict(state))) == json.loads(json.dumps(expected, default=str))


@pytest.mark.parametrize(
    ("value", "text"),
    [
        ({"v": float("nan")}, '{"v":"nan"}'),
        ({"v": [1.5, float("inf")]}, '{"v":[1.5,"inf"]}'),
        ({"v": (1, 2.5)}, '{"v":[1,2.5]}'),
    ],
    ids=["nan", "inf-in-list", "finite"],
)
def test_dumps_writes_non_finite_floats_as_strings(value: Any, text: str) -> None:
    """NaN and infinities are stored as strings; finite values as plain JSON."""
    assert dumps(value) == text


async def test_prune_drops_old_sent_messages_but_keeps_pending_and_dead(
    store: SqliteStore, tmp_path: Path
) -> None:
    """prune removes delivered outbox rows older than a week; pending and dead ones stay."""
    messages = [OutboxMessage("prod/web", f"k{i}", "hook:audit", {"n": i}) for i in range(3)]
    await store.save("prod/web", CanaryState(), None, [], messages)
    rows = await store.due(time.time() + 1)
    await store.mark(rows[0].id, "sent")
    with sqlite3.connect(tmp_path / "state.db") as db:
        db.execute("UPDATE outbox SET status='dead' WHERE idem='k1'")
    await store.prune(now=time.time() + SENT_KEEP_SECONDS + 60)
    with sqlite3.connect(tmp_path / "state.db") as db:
        left = sorted(db.execute("SELECT idem, status FROM outbox").fetchall())
    assert left == [("k1", "dead"), ("k2", "pending")]


GATE_SECONDS = 10.0
"""Bound of every wait on :class:`GatedStore`'s gate (a failing test still ends)."""


class GatedStore(SqliteStore):
    """A store whose first batch waits in the store's thread until the test opens the gate,
    and that notes batches started while another one is still running.

    A batch runs from the moment it is handed to the store's thread until its end is
    reported back to the event loop (``_flush`` to ``_flushed``), so a second batch
    merely queued behind the first in the thread counts as an overlap too.
    """

    def __init__(self, path: Path, saves: int) -> None:
        super().__init__(path)
        self.started = self.finished = self.overlaps = 0
        self.in_thread = threading.Event()
        self.gate = threading.Event()
        self.saves = saves
        self.all_queued = asyncio.Event()
        """Set once ``saves`` saves were queued (a save queues before its first await)."""

    async def commit(self, rows: DecisionRows) -> None:
        """Count the save, then save as the store does."""
        self.saves -= 1
        if self.saves == 0:
            self.all_queued.set()
        await super().commit(rows)

    def _flush(self) -> None:
        if self._queue:
            self.started += 1
            self.overlaps += self.started - self.finished > 1
        super()._flush()

    def _flushed(self, batch: list[Any], done: asyncio.Future[list[BaseException | None]]) -> None:
        self.finished += 1
        super()._flushed(batch, done)

    def _save_batch(self, writes: Sequence[Any]) -> list[BaseException | None]:
        if not self.in_thread.is_set():  # the first batch: hold it until the gate opens
            self.in_thread.set()
            self.gate.wait(GATE_SECONDS)
        return super()._save_batch(writes)


async def test_a_saver_cancelled_mid_batch_neither_overlaps_batches_nor_strands_others(
    tmp_path: Path,
) -> None:
    """A save whose batch is being written, cancelled natively (asyncio), as a scheduler
    abandoning a tick does: the batch still completes, the next one starts only after it,
    and the saves queued behind it are written."""
    store = GatedStore(tmp_path / "state.db", saves=6)
    await store.open()
    try:
        with anyio.fail_after(GATE_SECONDS):
            first = asyncio.ensure_future(store.save("ns/first", CanaryState(), None, [], []))
            await anyio.to_thread.run_sync(store.in_thread.wait, GATE_SECONDS)
            rest = [
                asyncio.ensure_future(store.save(f"ns/c{i}", CanaryState(), None, [], []))
                for i in range(5)
            ]
            await store.all_queued.wait()
            first.cancel()
            await asyncio.wait([first])
            assert first.cancelled() and store.started == 1  # nothing else started yet
            store.gate.set()
            await asyncio.gather(*rest)
        assert store.overlaps == 0 and (store.started, store.finished) == (2, 2)
        assert stored_keys(tmp_path / "state.db") == {"ns/first"} | {f"ns/c{i}" for i in range(5)}
    finally:
        store.gate.set()
        await store.close()
