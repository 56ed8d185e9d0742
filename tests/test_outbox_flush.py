"""The outbox's shutdown flush: it waits for what is due and in flight, within its grace.

Most tests drive the dispatcher one poll at a time (``drain_once``) with a
clock the test moves forward, so retries and dead letters need no waiting;
messages come from real runner decisions or are written to the store directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import cast

import anyio
import pytest
from outbox_helpers import audited, config, dispatcher, message, put, rows, services
from receiver import Receiver

from canaryd.http import HttpTransport
from canaryd.service.store import OutboxMessage, StateStore
from canaryd.service.supervisor import flush_outbox

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- shutdown

FLUSH_BOUND = 30.0
"""Grace of the shutdown flushes below that must not run out: they return as soon as
nothing is due, so only a failing test waits this long."""


async def test_flush_returns_once_the_dispatcher_sent_everything_due(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """The shutdown flush waits while the running dispatcher sends every due message in order."""
    async with Receiver() as r:
        cfg = config(tmp_path, audited(["web", "api"], r.url))
        await put(store, *[message(k, n) for n in range(3) for k in ("prod/web", "prod/api")])
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher(services(cfg, store, session)).run)
            left = await flush_outbox(store, FLUSH_BOUND)
            tg.cancel_scope.cancel()
    assert left == 0
    assert [q.json["n"] for q in r.requests if q.path == "/web"] == [0, 1, 2]
    assert [q.json["n"] for q in r.requests if q.path == "/api"] == [0, 1, 2]


class WatchedReads:
    """A store as the shutdown flush sees it (it only reads the due list), counting its
    reads; :meth:`wait` returns after the next read or :meth:`poke`."""

    def __init__(self, store: StateStore) -> None:
        self.store = store
        self.reads = 0
        self._changed = anyio.Event()

    async def due(self, now: float, limit: int = 100) -> list[OutboxMessage]:
        """The store's due list, counted."""
        answer = await self.store.due(now, limit)
        self.reads += 1
        self.poke()
        return answer

    def poke(self) -> None:
        """Wake whoever waits."""
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self) -> None:
        """Wait for the next read or poke."""
        await self._changed.wait()


async def test_flush_waits_for_a_delivery_in_flight(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """The shutdown flush started while a delivery is in flight waits for it and the next,
    and returns only once both are marked sent."""
    async with Receiver(delay=60.0) as r:  # answers held until r.release()
        cfg = config(tmp_path, audited(["web"], r.url, timeout="60s"))
        await put(store, message("prod/web", 0), message("prod/web", 1))
        watched = WatchedReads(store)
        ended: list[object] = []

        async def flush() -> None:
            ended.append(await flush_outbox(cast(StateStore, watched), FLUSH_BOUND))
            ended.append(rows(store))
            watched.poke()

        with anyio.fail_after(FLUSH_BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(dispatcher(services(cfg, store, session)).run)
                await r.wait_for(1)  # message 0 is in flight, its answer held
                tg.start_soon(flush)
                while watched.reads < 5 and not ended:
                    await watched.wait()
                assert not ended and len(r.requests) == 1  # it looked five times, still waits
                r.release()
                while not ended:
                    await watched.wait()
                tg.cancel_scope.cancel()
    sent = [(message("prod/web", n).idempotency_key, "sent", 1, None) for n in range(2)]
    assert ended == [0, sent]
    assert [q.json["n"] for q in r.requests] == [0, 1]


async def test_flush_is_bounded_by_its_grace(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Against a hanging receiver the shutdown flush returns after its grace, the canary's
    messages still pending (one canary with a message due)."""
    async with Receiver(delay=30.0) as r:
        cfg = config(tmp_path, audited(["web"], r.url, timeout="20s"))
        await put(store, message("prod/web", 0), message("prod/web", 1))
        with anyio.fail_after(FLUSH_BOUND):
            async with anyio.create_task_group() as tg:
                await tg.start(dispatcher(services(cfg, store, session)).run)
                await r.wait_for(1)  # message 0 is in flight; its answer never comes in time
                with anyio.fail_after(10):  # well before the hook's timeout ends the delivery
                    left = await flush_outbox(store, 0.3)
                tg.cancel_scope.cancel()
    assert left == 1 and len(r.requests) == 1
    assert [s for _, s, _, _ in rows(store)] == ["pending", "pending"]
