"""What ``daemon.stopped`` reports as left in the outbox: messages, not canaries."""

from __future__ import annotations

import time

import pytest

from canaryd.core.analysis import CanaryState
from canaryd.service.store import OutboxMessage, StateStore
from canaryd.service.supervisor import outbox_waiting

pytestmark = pytest.mark.anyio


def message(key: str, n: int) -> OutboxMessage:
    """The ``n``-th message of canary ``key``."""
    return OutboxMessage(key, f"{key}:r1:{n}:0:hook:audit", "hook:audit", {"n": n})


async def test_every_waiting_message_is_counted(store: StateStore) -> None:
    """Pending messages (due or backing off, behind another of their canary's) and held ones
    count one each; sent and dead ones do not."""
    web = [message("prod/web", n) for n in range(3)]
    api = [message("prod/api", n) for n in range(2)]
    await store.save("prod/web", CanaryState(), None, [], web)
    await store.save("prod/api", CanaryState(), None, [], api)
    held = [message("prod/db", 0)]
    await store.save("prod/db", CanaryState(), None, [], held, routes=[{"canary": 10}])
    first_web, first_api = (await store.due(time.time()))[:2]
    await store.mark(first_web.id, "pending", next_at=time.time() + 3600, error="HTTP 500")
    await store.mark(first_api.id, "sent")
    second_api = (await store.due(time.time()))[-1]
    await store.mark(second_api.id, "dead", error="HTTP 410")

    assert await outbox_waiting(store) == 3 + 1


async def test_a_store_that_cannot_tell_is_minus_one(store: StateStore) -> None:
    """A store that cannot be read gives -1, not an exception."""
    await store.close()

    assert await outbox_waiting(store) == -1
