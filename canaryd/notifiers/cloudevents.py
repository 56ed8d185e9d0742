"""CloudEvents 1.0 over HTTP, structured content mode (``application/cloudevents+json``).

The ``id`` is the outbox's idempotency key, so a receiver that de-duplicates
on ``(source, id)`` (as the spec suggests) sees each alert once however often
it is retried. ``data`` is the generic webhook payload.
"""

from __future__ import annotations

import hashlib
import socket
from typing import Any

from canaryd.core.events import Event
from canaryd.notifiers import webhook
from canaryd.notifiers.text import RenderOptions, rfc3339

CONTENT_TYPE = "application/cloudevents+json"
TYPE_PREFIX = "io.canaryd."


def default_source() -> str:
    """``canaryd/<hostname>``: the ``source`` used when none is configured."""
    return f"canaryd/{socket.gethostname() or 'localhost'}"


def stable_id(event: Event) -> str:
    """A deterministic id for an event (name, canary, revision, time), for callers without one."""
    key = f"{event.name}\0{event.canary}\0{event.revision or ''}\0{event.time!r}"
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def envelope(
    event: Event, *, event_id: str | None = None, source: str | None = None
) -> dict[str, Any]:
    """The structured-mode CloudEvent for ``event``.

    Args:
        event: the event to wrap.
        event_id: the CloudEvent ``id``; pass the idempotency key. Defaults to
            :func:`stable_id`.
        source: the CloudEvent ``source``; defaults to :func:`default_source`.

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    return {
        "specversion": "1.0",
        "id": event_id or stable_id(event),
        "source": source or default_source(),
        "type": TYPE_PREFIX + event.name,
        "subject": event.canary,
        "time": rfc3339(event.time),
        "datacontenttype": "application/json",
        "data": webhook.payload(event),
    }


def render(event: Event, options: RenderOptions) -> dict[str, Any]:
    """Render the CloudEvent, with ``options.event_id`` and ``options.source``.

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    return envelope(event, event_id=options.event_id, source=options.source)
