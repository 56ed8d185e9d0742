"""The SQLite store paces its batches (docs/design.md, "State"): busy saves share commits."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anyio
import pytest

from canaryd.core.analysis import CanaryState, CheckRecord, Outcome, Phase
from canaryd.service.store import SqliteStore
from canaryd.service.store.codec import DecisionRows

pytestmark = pytest.mark.anyio


def counted(store: SqliteStore) -> list[int]:
    """Record the size of every batch ``store`` writes (the list it returns fills as it writes)."""
    sizes: list[int] = []
    write = store._save_batch

    def save_batch(writes: Sequence[DecisionRows]) -> list[BaseException | None]:
        sizes.append(len(writes))
        return write(writes)

    store._save_batch = save_batch  # type: ignore[method-assign]
    return sizes


async def save(store: SqliteStore, i: int) -> None:
    """Save canary ``i``'s state and one passing check."""
    state = CanaryState(phase=Phase.PROGRESSING, revision="r1", rollout_id=f"c{i}-r1")
    record = CheckRecord(1000.0 + i, 1, Outcome.PASS, 10, 1, 0, None)
    await store.save(f"ns/c{i}", state, record, [], [])


async def test_saves_arriving_within_the_spacing_share_one_batch(tmp_path: Path) -> None:
    """Twenty saves made right after a commit wait for one batch instead of starting their own."""
    store = SqliteStore(tmp_path / "state.db", spacing=0.5)
    await store.open()
    sizes = counted(store)
    try:
        with anyio.fail_after(10):
            await save(store, 0)
            async with anyio.create_task_group() as tg:
                for i in range(1, 21):
                    tg.start_soon(save, store, i)
        assert sizes == [1, 20]
        assert len(await store.load_states()) == 21
    finally:
        await store.close()


async def test_an_idle_store_writes_at_once_and_close_writes_what_waits(tmp_path: Path) -> None:
    """The first save is not delayed; one waiting for its batch is written by close, not lost."""
    path = tmp_path / "state.db"
    store = SqliteStore(path, spacing=60.0)
    await store.open()
    with anyio.fail_after(10):
        await save(store, 0)
    saved = anyio.Event()

    async def second() -> None:
        await save(store, 1)
        saved.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(second)
        await anyio.sleep(0.2)
        assert not saved.is_set()  # paced: its batch is not due for a minute
        with anyio.fail_after(10):
            await store.close()
    reopened = SqliteStore(path)
    await reopened.open()
    try:
        assert set(await reopened.load_states()) == {"ns/c0", "ns/c1"}
    finally:
        await reopened.close()


async def test_a_call_made_after_a_waiting_save_runs_after_it(tmp_path: Path) -> None:
    """Store calls keep their order: a read asked while a save waits for its batch sees it."""
    store = SqliteStore(tmp_path / "state.db", spacing=60.0)
    await store.open()
    try:
        with anyio.fail_after(10):
            await save(store, 0)
            async with anyio.create_task_group() as tg:
                tg.start_soon(save, store, 1)
                await anyio.sleep(0.05)
                assert set(await store.load_states()) == {"ns/c0", "ns/c1"}
    finally:
        await store.close()
