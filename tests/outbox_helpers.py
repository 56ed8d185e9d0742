"""Configs, services and receivers' views shared by the test_outbox_* modules.

Most tests drive the dispatcher one poll at a time (``drain_once``) with a
clock the test moves forward, so retries and dead letters need no waiting;
messages come from real runner decisions or are written to the store directly.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from postgres import query
from receiver import Request

from canaryd.config import Settings
from canaryd.core.analysis import CanaryState
from canaryd.http import HttpTransport
from canaryd.service.dispatcher import Dispatcher
from canaryd.service.services import Services
from canaryd.service.store import OutboxMessage, StateStore
from canaryd.testing import FakeClock as Clock
from canaryd.testing import FakeProvider, FakeRouter

SECRET = "s3cret-signing-key"


# --------------------------------------------------------------------------- fakes and helpers


def config(tmp_path: Path, canaries: list[dict[str, Any]], **top: Any) -> Settings:
    """A config of ``canaries`` (each a partial canary) with a fake provider and router."""
    full = []
    for c in canaries:
        analysis = {
            "interval": "1s",
            "threshold": 1,
            "stepWeight": 25,
            "maxWeight": 50,
            "metrics": [{"name": "sr", "query": "sr", "thresholdRange": {"min": 99}}],
            **c.pop("analysis", {}),
        }
        full.append({"namespace": "prod", "router": "lb", "analysis": analysis, **c})
    outbox = {"maxAge": "60s", "initialBackoff": "10ms", "maxBackoff": "50ms", "pollInterval": 0.05}
    return Settings.model_validate(
        {
            "state": f"sqlite://{tmp_path}/state.db",
            "providers": {"prom": {"type": "prometheus"}},
            "routers": {"lb": {"type": "webhook", "url": "http://127.0.0.1:9/"}},
            "outbox": {**outbox, **top.pop("outbox", {})},
            "canaries": full,
            **top,
        }
    )


def audited(names: list[str], url: str, **hook: Any) -> list[dict[str, Any]]:
    """Canaries ``prod/<name>`` whose ``event`` webhook ``audit`` posts to ``url/<name>``."""
    return [
        {
            "name": n,
            "analysis": {
                "webhooks": [{"name": "audit", "type": "event", "url": f"{url}/{n}", **hook}]
            },
        }
        for n in names
    ]


def services(
    cfg: Settings,
    store: StateStore,
    session: HttpTransport,
    provider: FakeProvider | None = None,
) -> Services:
    """Services with fakes at the provider and router seams."""
    return Services(cfg, session, {"prom": provider or FakeProvider()}, {"lb": FakeRouter()}, store)


def dispatcher(svc: Services, clock: Callable[[], float] = time.time) -> Dispatcher:
    """A dispatcher over ``svc``'s store."""
    return Dispatcher(lambda: svc, svc.store, clock)


def message(key: str, n: int, target: str = "hook:audit") -> OutboxMessage:
    """The ``n``-th message of canary ``key``; its hook payload names both."""
    return OutboxMessage(key, f"{key}:r1:{n}:0:{target}", target, {"canary": key, "n": n})


async def put(store: StateStore, *messages: OutboxMessage) -> None:
    """Write messages the way the runtime does: each with a decision, in this order."""
    for m in messages:
        await store.save(m.key, CanaryState(), None, [], [m])


def rows(store: StateStore) -> list[tuple[str, str, int, str | None]]:
    """Every outbox row as (idempotency key, status, attempts, last error), oldest first."""
    return query(store, "SELECT idem, status, attempts, last_error FROM outbox ORDER BY id")


async def drain(d: Dispatcher, clock: Clock, until: Callable[[], bool], polls: int = 50) -> None:
    """Poll (jumping past any backoff each time) until ``until()`` holds; bounded."""
    for _ in range(polls):
        if until():
            return
        await d.drain_once()
        clock.advance(1.0)
    assert until(), f"not done after {polls} polls"


def keys(requests: list[Request]) -> list[str]:
    """The Idempotency-Key of each request."""
    return [q.headers["Idempotency-Key"] for q in requests]


def verify(request: Request, secret: str, *, max_age: float = 300.0) -> bool:
    """Check X-Canaryd-Signature as a receiver would: HMAC of "<t>.<raw body>", fresh t."""
    fields = dict(p.split("=", 1) for p in request.headers["X-Canaryd-Signature"].split(","))
    t = fields["t"]
    expected = hmac.new(secret.encode(), f"{t}.".encode() + request.body, hashlib.sha256)
    return hmac.compare_digest(expected.hexdigest(), fields["v1"]) and (
        abs(time.time() - int(t)) <= max_age
    )
