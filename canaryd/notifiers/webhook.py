"""The generic JSON notifier: one flat, documented object per event.

The payload also carries Flagger's event-webhook keys (``name``, ``namespace``,
``phase``, ``metadata.eventMessage/eventType/timestamp``) and the analysis
counters of docs/design.md ("Outgoing calls") at the top level, so a receiver written for
Flagger keeps working.
"""

from __future__ import annotations

import math
from typing import Any

from canaryd.core.alerts import severity_of
from canaryd.core.events import Event
from canaryd.notifiers.text import RenderOptions, flagger_metadata, rfc3339

CONTENT_TYPE = "application/json"

FLAGGER_TOP_LEVEL = ("canaryWeight", "primaryWeight", "iteration", "failedChecks", "threshold")
"""Event fields repeated at the top level, where Flagger's webhook payload has them."""


def jsonable(value: Any) -> Any:
    """Make ``value`` strict-JSON safe: NaN/Inf become ``None``, unknown objects strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, str | int | bool):
        return value
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return str(value)


def payload(event: Event) -> dict[str, Any]:
    """The generic JSON object for ``event`` (also the ``data`` of a CloudEvent).

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    metadata = flagger_metadata(event)
    body: dict[str, Any] = {
        "event": event.name,
        "level": event.level,
        "severity": severity_of(event).value,
        "canary": event.canary,
        "namespace": event.namespace,
        "name": event.canary_name,
        "revision": event.revision,
        "phase": event.phase,
        "time": rfc3339(event.time),
        "message": metadata["eventMessage"],
        "fields": jsonable(event.fields),
        "metadata": metadata,
    }
    for key in FLAGGER_TOP_LEVEL:
        if key in event.fields:
            body[key] = jsonable(event.fields[key])
    return body


def render(event: Event, options: RenderOptions) -> dict[str, Any]:
    """Render the generic payload (no option applies to it).

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    return payload(event)
