"""The dispatcher against a store whose due list arrives late, replayed exactly with fakes.

A pooled store (PostgreSQL) may answer a read of the due list from a snapshot taken
before a concurrent delivery's sent mark: that message still shows as due although
it was just delivered. Here the store's answer is held back until one delivery the
test holds has ended and been marked, on every read, so the race happens each time.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import anyio
import pytest

from canaryd.config import Settings
from canaryd.core.analysis import CanaryState
from canaryd.http import HttpRequest, HttpResponse
from canaryd.service.dispatcher import Dispatcher
from canaryd.service.services import Services
from canaryd.service.store import OutboxMessage
from canaryd.testing import FakeProvider, FakeRouter, FakeStore

pytestmark = pytest.mark.anyio

CANARIES = ("a", "b", "c", "d")
WAIT_SECONDS = 10.0
"""Bound of every wait in these tests (a failing test still ends)."""


@dataclass
class HeldHttp:
    """An HTTP transport that answers 200 to each request once the test lets it go.

    Attributes:
        requests: every request, in arrival order.
        held: one event per request still waiting for its answer, oldest first.
        expected: how many requests :attr:`arrived` waits for.
        arrived: set once ``expected`` requests are held at the same time.
    """

    expected: int
    requests: list[HttpRequest] = field(default_factory=list)
    held: list[anyio.Event] = field(default_factory=list)
    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def send(self, request: HttpRequest) -> HttpResponse:
        """Record the request, then answer 200 once released (bounded by its timeout)."""
        self.requests.append(request)
        go = anyio.Event()
        self.held.append(go)
        if len(self.held) >= self.expected:
            self.arrived.set()
        with anyio.fail_after(request.timeout):
            await go.wait()
        return HttpResponse(200, {}, b"")

    def release_one(self) -> bool:
        """Let the oldest held request have its answer; False when none is held."""
        if not self.held:
            return False
        self.held.pop(0).set()
        return True

    async def aclose(self) -> None:
        """Nothing to close."""


@dataclass
class LateStore(FakeStore):
    """A fake store whose due list, once :attr:`late` is set, is answered only after one
    held delivery has ended and its mark was written: the answer is stale every time.
    :attr:`all_sent` is set once every message is marked sent."""

    http: HeldHttp = field(default_factory=lambda: HeldHttp(len(CANARIES)))
    late: bool = False
    all_sent: anyio.Event = field(default_factory=anyio.Event)
    _marked: anyio.Event = field(default_factory=anyio.Event)

    async def due(self, now: float, limit: int = 100) -> list[OutboxMessage]:
        """The due list as it was when the read started, answered after a delivery ended."""
        answer = await super().due(now, limit)
        if self.late and self.http.release_one():
            with anyio.fail_after(WAIT_SECONDS):
                await self._marked.wait()
        return answer

    async def mark(
        self, message_id: int, status: str, *, next_at: float = 0.0, error: str | None = None
    ) -> None:
        """Record the attempt, then wake a read waiting for it."""
        await super().mark(message_id, status, next_at=next_at, error=error)
        if all(s.status == "sent" for s in self.outbox):
            self.all_sent.set()
        self._marked.set()
        self._marked = anyio.Event()


def settings() -> Settings:
    """Canaries ``prod/a``... each with an ``event`` webhook ``audit``."""
    analysis: dict[str, Any] = {
        "interval": "1s",
        "stepWeight": 25,
        "metrics": [{"name": "sr", "query": "sr", "thresholdRange": {"min": 99}}],
    }
    hook = {"name": "audit", "type": "event", "url": "http://127.0.0.1:9/audit"}
    return Settings.model_validate(
        {
            "providers": {"prom": {"type": "prometheus"}},
            "routers": {"lb": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
            "outbox": {"pollInterval": 0.01},
            "canaries": [
                {
                    "name": name,
                    "namespace": "prod",
                    "router": "lb",
                    "analysis": {**analysis, "webhooks": [hook]},
                }
                for name in CANARIES
            ],
        }
    )


async def fill(store: FakeStore, per_canary: int) -> None:
    """Store ``per_canary`` messages for each canary, as decisions do."""
    for n in range(per_canary):
        for name in CANARIES:
            key = f"prod/{name}"
            m = OutboxMessage(key, f"{key}:r1:{n}:0:hook:audit", "hook:audit", {"n": n})
            await store.save(key, CanaryState(), None, [], [m])


async def test_a_message_delivered_while_the_due_list_was_read_is_not_sent_again() -> None:
    """When every due list arrives after a delivery in flight ended (and was marked sent),
    each message is still sent exactly once, however many reads in a row are stale."""
    store = LateStore()
    await fill(store, per_canary=2)
    svc = Services(settings(), store.http, {"prom": FakeProvider()}, {"lb": FakeRouter()}, store)
    dispatcher = Dispatcher(lambda: svc, store, time.time)
    with anyio.fail_after(WAIT_SECONDS):
        async with anyio.create_task_group() as tg:
            await tg.start(dispatcher.run)
            await store.http.arrived.wait()  # every canary's first message is in flight
            store.late = True
            await store.all_sent.wait()
            tg.cancel_scope.cancel()
    sent = Counter(r.headers["Idempotency-Key"] for r in store.http.requests)
    assert sent == Counter({s.message.idempotency_key: 1 for s in store.outbox})
    assert len(sent) == 2 * len(CANARIES)
