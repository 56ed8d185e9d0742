"""The rollback journal: preallocated, written in place (so a full disk cannot refuse it),
read back at start. See docs/reliability.md ("A rollback the store never recorded")."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from disks import small_tmpfs
from runtime_helpers import runner, settings

from canaryd.core.analysis import Phase
from canaryd.http import HttpTransport
from canaryd.service.rollbacks import SLOT, SLOTS, Entry, RollbackJournal
from canaryd.service.store import SqliteStore
from canaryd.testing import FakeProvider, FakeRouter


def _entry(key: str, seq: int, rollout: str = "r1") -> Entry:
    return Entry(key, rollout, seq, f"reason {seq}", {"manual": True}, failed_checks=seq % 4)


def test_the_newest_entry_of_each_canary_is_read_back_even_after_the_slots_wrap(
    tmp_path: Path,
) -> None:
    """Entries written over more than every slot come back newest-per-canary, in a file of
    fixed size."""
    journal = RollbackJournal(tmp_path / "j")
    assert journal.open() == {}
    for seq in range(1, SLOTS + 6):
        journal.write(_entry("prod/web", seq))
    journal.write(_entry("prod/api", 7))
    journal.close()
    again = RollbackJournal(tmp_path / "j")
    read = again.open()
    again.write(_entry("prod/web", 999))
    again.close()
    assert (tmp_path / "j").stat().st_size == SLOT * SLOTS
    assert {k: (e.seq, e.reason, e.fields, e.failed_checks) for k, e in read.items()} == {
        "prod/web": (SLOTS + 5, f"reason {SLOTS + 5}", {"manual": True}, (SLOTS + 5) % 4),
        "prod/api": (7, "reason 7", {"manual": True}, 3),
    }
    assert RollbackJournal(tmp_path / "j").open()["prod/web"].seq == 999


@pytest.mark.integration  # starts a process (see tests/support/guard.py)
def test_an_entry_is_written_on_a_really_full_disk(tmp_path: Path) -> None:
    """Once opened, the journal takes entries on a filesystem filled to its last byte."""
    with small_tmpfs(tmp_path, "2m") as disk:
        journal = RollbackJournal(disk.path / "state.db.rollbacks")
        journal.open()
        disk.fill()
        try:
            journal.write(_entry("prod/web", 3))
        finally:
            journal.close()
        read = RollbackJournal(disk.path / "state.db.rollbacks").open()
    assert read["prod/web"].seq == 3


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("rollout", "seq", "resent"),
    [("r1", 5, True), ("r1", 4, False), ("other", 5, False)],
    ids=["unrecorded", "recorded", "older-rollout"],
)
async def test_only_a_rollback_the_store_never_recorded_is_sent_again(
    tmp_path: Path,
    store: SqliteStore,
    session: HttpTransport,
    rollout: str,
    seq: int,
    resent: bool,
) -> None:
    """A journalled rollback newer than the recorded state of the same rollout is sent and
    recorded before anything else, with the failed checks it was decided at; an older one,
    or another rollout's, changes nothing."""
    router = FakeRouter()
    cfg = settings(tmp_path)
    first = runner(cfg, store, session, FakeProvider([99.9]), router)
    await first.start_rollout("v2", {})
    await first.tick()  # 0 -> 25
    state = replace(first.state, rollout_id="r1", seq=4)
    again = runner(cfg, store, session, FakeProvider([99.9]), router, state)
    lost = Entry("prod/web", rollout, seq, "latency 900 > max 500", {}, failed_checks=2)
    again.recover(lost)
    before = len(router.requests)
    await again.tick()
    sent = [(q.action, q.canary_weight) for q in router.requests[before:]]
    if resent:
        assert sent == [("rollback", 0)]
        assert again.state.phase is Phase.FAILED
        assert again.state.reason == "latency 900 > max 500"
        assert again.state.failed_checks == 2  # the threshold reached, not the count before
        assert (await store.load_states())["prod/web"].failed_checks == 2
    else:
        assert sent == [("route", 50)]
        assert again.state.phase is Phase.PROGRESSING
