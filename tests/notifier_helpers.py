"""Events, a client session and delivery helpers shared by the test_notifiers_* modules."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from receiver import Receiver

from canaryd.config import Notifier
from canaryd.core.events import Event
from canaryd.http import HttpTransport
from canaryd.notifiers import deliver, render

T0 = 1714564800.5  # 2024-05-01T12:00:00.500Z


def ev(name: str, revision: str | None = "v2", phase: str = "Progressing", **fields: Any) -> Event:
    """Build an event for ``prod/web``."""
    return Event(name, "prod/web", revision, phase, T0, fields)


ROLLED_BACK = ev(
    "rollout.rolled_back",
    phase="Failed",
    reason="failed checks threshold reached",
    metric="request-success-rate",
    value=91.8,
    min=99,
    failedChecks=5,
    threshold=5,
    canaryWeight=0,
    primaryWeight=100,
)


async def send(
    session: HttpTransport,
    receiver: Receiver,
    kind: str,
    event: Event = ROLLED_BACK,
    *,
    key: str = "key-1",
    secret: SecretStr | None = None,
) -> dict[str, Any]:
    """Render ``event`` for ``kind``, deliver it to ``receiver`` and return the parsed JSON."""
    payload, content_type = render(kind, event, event_id=key, source="canaryd/test")
    notifier = Notifier(type=kind, url=receiver.url + "/hook")
    await deliver(session, notifier, payload, content_type, idempotency_key=key, secret=secret)
    body: dict[str, Any] = receiver.requests[-1].json
    return body
