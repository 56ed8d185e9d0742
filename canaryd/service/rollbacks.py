"""The rollback journal: rollbacks sent, written where a full disk cannot refuse them.

A rollback goes to the router before the state store records it (traffic goes
back even when the store is full). Killed before the store takes it, canaryd
would restart from the state before the rollback and could move traffic
towards the canary again. So each rollback is first written here: a file next
to the state file, allocated in full (zeros) when canaryd starts, whose fixed
slots are overwritten in place, so writing one needs no new space on the
filesystem. At start the newest entry of each canary tells the runner a
rollback the store may not have recorded (docs/reliability.md, "A rollback
the store never recorded").
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import anyio.to_thread
import structlog

from canaryd.service.store import dumps

log = structlog.get_logger()

SLOT = 1024
"""Bytes per entry (an entry that would not fit keeps its reason and drops its fields)."""

SLOTS = 256
"""Entries kept; the oldest is overwritten first."""

WRITE_SECONDS = 5.0
"""Longest a journal write may take before the rollback goes out without it."""


@dataclass(frozen=True)
class Entry:
    """One rollback sent: which canary, rollout and decision number, and why."""

    key: str
    rollout: str | None
    seq: int
    reason: str
    fields: dict[str, Any]
    n: int = 0
    """Order of writing (the newest entry of a canary wins)."""
    failed_checks: int = 0
    """The rollout's failed checks when it was rolled back (recorded with it if sent again)."""


class RollbackJournal:
    """The preallocated journal file (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        """Name the journal file; :meth:`open` creates or reads it."""
        self.path = path
        self._fd: int | None = None
        self._n = 0
        self._lock = threading.Lock()

    def open(self) -> dict[str, Entry]:
        """Open (creating and allocating it if needed) and read the newest entry per canary.

        Raises:
            OSError: the file cannot be created, allocated or read.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            size = os.fstat(fd).st_size
            if size < SLOT * SLOTS:
                os.pwrite(fd, b"\0" * (SLOT * SLOTS - size), size)
                os.fsync(fd)
            data = os.pread(fd, SLOT * SLOTS, 0)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd
        newest: dict[str, Entry] = {}
        for i in range(SLOTS):
            entry = _parse(data[i * SLOT : (i + 1) * SLOT])
            if entry is None:
                continue
            self._n = max(self._n, entry.n)
            if entry.key not in newest or newest[entry.key].n < entry.n:
                newest[entry.key] = entry
        return newest

    def write(self, entry: Entry) -> None:
        """Write an entry over the oldest slot and sync it to disk.

        Raises:
            OSError: it could not be written (the file is closed, or the disk failed).
        """
        with self._lock:
            if self._fd is None:
                raise OSError("the rollback journal is not open")
            self._n += 1
            n = self._n
            data = _encode(entry, n)
            os.pwrite(self._fd, data, ((n - 1) % SLOTS) * SLOT)
            os.fdatasync(self._fd)

    async def record(self, entry: Entry) -> None:
        """Write ``entry`` (bounded by :data:`WRITE_SECONDS`); a failure is logged, not raised:
        the rollback goes out in any case."""
        try:
            with anyio.fail_after(WRITE_SECONDS):
                await anyio.to_thread.run_sync(self.write, entry, abandon_on_cancel=True)
        except (OSError, TimeoutError) as exc:
            log.error("rollback.journal_failed", canary=entry.key, error=str(exc))

    def close(self) -> None:
        """Close the file (idempotent)."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def journal_path(state_path: Path) -> Path:
    """The journal next to the state file ``state.db``: ``state.db.rollbacks``."""
    return state_path.with_name(state_path.name + ".rollbacks")


def _encode(entry: Entry, n: int) -> bytes:
    """One slot: the entry as JSON, zero-padded (its fields dropped if too long)."""
    body: dict[str, Any] = {
        "n": n,
        "key": entry.key,
        "rollout": entry.rollout,
        "seq": entry.seq,
        "reason": entry.reason[:300],
        "fields": entry.fields,
        "failedChecks": entry.failed_checks,
    }
    data = dumps(body).encode()
    if len(data) >= SLOT:
        body["fields"] = {}
        data = dumps(body).encode()[: SLOT - 1]
    return data.ljust(SLOT, b"\0")


def _parse(slot: bytes) -> Entry | None:
    """The entry in one slot, or None for an empty or unreadable one."""
    text = slot.rstrip(b"\0")
    if not text:
        return None
    try:
        data = json.loads(text)
        return Entry(
            str(data["key"]),
            data["rollout"],
            int(data["seq"]),
            str(data["reason"]),
            dict(data.get("fields") or {}),
            int(data["n"]),
            int(data.get("failedChecks") or 0),  # absent in entries written before 2026-11-30
        )
    except (ValueError, KeyError, TypeError):
        log.warning("rollback.journal_unreadable_entry")
        return None
