"""Outbox delivery to real receivers: once per key, in order, per-canary queues.

Most tests drive the dispatcher one poll at a time (``drain_once``) with a
clock the test moves forward, so retries and dead letters need no waiting;
messages come from real runner decisions or are written to the store directly.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest
from outbox_helpers import (
    SECRET,
    audited,
    config,
    dispatcher,
    drain,
    keys,
    message,
    put,
    rows,
    services,
    verify,
)
from receiver import Receiver, Request
from support import free_port

from canaryd.core.analysis import CanaryState, Phase
from canaryd.http import HttpTransport
from canaryd.service.runtime import CanaryRunner
from canaryd.service.store import SqliteStore, StateStore
from canaryd.testing import FakeClock as Clock

pytestmark = pytest.mark.anyio


def delivered(r: Receiver) -> list[Request]:
    """The requests ``r`` answered with a 2xx, in arrival order."""
    return [q for i, q in enumerate(r.requests) if 200 <= r.status_for(i) < 300]


# --------------------------------------------------------------------------- outages


@pytest.mark.parametrize("outage", ["503", "refused"], ids=["answering-503", "connection-refused"])
async def test_receiver_down_then_back_gets_each_message_once_in_order(
    tmp_path: Path, store: StateStore, session: HttpTransport, outage: str
) -> None:
    """A receiver down for a while, then back, gets every message exactly once per key, in order."""
    port = free_port()
    statuses = [503, 503, 503, 200] if outage == "503" else [200]
    cfg = config(tmp_path, audited(["web"], f"http://127.0.0.1:{port}"))
    msgs = [message("prod/web", n) for n in range(4)]
    await put(store, *msgs)
    clock = Clock()
    d = dispatcher(services(cfg, store, session), clock)
    if outage == "refused":
        for _ in range(3):
            await d.drain_once()
            clock.advance(1.0)
        assert rows(store)[0][1:3] == ("pending", 3)
    async with Receiver(statuses, port=port) as r:
        await drain(d, clock, lambda: all(s == "sent" for _, s, _, _ in rows(store)))
    assert keys(delivered(r)) == [m.idempotency_key for m in msgs]
    assert [q.json["n"] for q in delivered(r)] == [0, 1, 2, 3]
    assert d.counters == {"sent": 4, "failed": 3, "dead": 0}


async def test_idempotency_key_is_the_same_on_every_retry_and_after_a_restart(
    tmp_path: Path, session: HttpTransport
) -> None:
    """Retries, including those after the store is reopened by a new dispatcher, reuse the key."""
    async with Receiver([500, 502, 503, 200]) as r:
        cfg = config(tmp_path, audited(["web"], r.url, secret_env="CANARYD_TEST_SECRET"))
        first = SqliteStore(tmp_path / "state.db")
        await first.open()
        await put(first, message("prod/web", 0))
        clock = Clock()
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("CANARYD_TEST_SECRET", SECRET)
            for _ in range(2):
                await dispatcher(services(cfg, first, session), clock).drain_once()
                clock.advance(1.0)
            await first.close()
            again = SqliteStore(tmp_path / "state.db")
            await again.open()
            d = dispatcher(services(cfg, again, session), clock)
            await drain(d, clock, lambda: rows(again)[0][1] == "sent")
            await again.close()
    assert keys(r.requests) == ["prod/web:r1:0:0:hook:audit"] * 4
    assert all(verify(q, SECRET) for q in r.requests)
    assert rows(again) == [("prod/web:r1:0:0:hook:audit", "sent", 4, None)]


async def test_failing_canary_blocks_only_its_own_later_messages(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """Two canaries interleaved: a failing head holds only its own queue; both stay in order."""
    async with Receiver([503, 503, 503, 200]) as slow, Receiver() as fast:
        cfg = config(
            tmp_path,
            [
                *audited(["web"], slow.url),
                *audited(["api"], fast.url),
            ],
        )
        msgs = [message(k, n) for n in range(3) for k in ("prod/web", "prod/api")]
        await put(store, *msgs)
        clock = Clock()
        d = dispatcher(services(cfg, store, session), clock)
        for _ in range(3):  # web keeps failing its first message meanwhile
            await d.drain_once()
            clock.advance(1.0)
        assert len(delivered(fast)) == 3 and not delivered(slow)
        await drain(d, clock, lambda: len(delivered(slow)) == 3)
    assert [q.json["n"] for q in delivered(slow)] == [0, 1, 2]
    assert [q.json["n"] for q in delivered(fast)] == [0, 1, 2]
    assert Counter(keys(slow.requests))["prod/web:r1:0:0:hook:audit"] == 4


async def test_a_hanging_receiver_delays_neither_analysis_nor_other_canaries(
    tmp_path: Path, store: StateStore, session: HttpTransport
) -> None:
    """While one canary's receiver hangs, its analysis ticks on and another's alerts arrive."""
    async with Receiver(delay=30.0) as hanging, Receiver() as ok:
        cfg = config(
            tmp_path,
            [*audited(["web"], hanging.url, timeout="20s"), *audited(["api"], ok.url)],
        )
        svc = services(cfg, store, session)
        web = CanaryRunner(cfg.canaries[0], CanaryState(), svc)
        api = CanaryRunner(cfg.canaries[1], CanaryState(), svc)
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher(svc).run)
            await web.start_rollout("v2", {})
            await hanging.wait_for(1)
            with anyio.fail_after(3):
                for _ in range(5):
                    await web.tick()
                await api.start_rollout("v2", {})
                await api.tick()
                await ok.wait_for(3)
            tg.cancel_scope.cancel()
    assert web.state.phase is Phase.SUCCEEDED
    assert len(hanging.requests) == 1
    assert [q.json["event"]["event"] for q in ok.requests] == [
        "rollout.started",
        "analysis.tick",
        "weight.advanced",
    ]
