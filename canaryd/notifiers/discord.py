"""Discord webhooks: one embed per event.

Embed limits (Discord API, "Embed Limits"): title 256 characters, description
4096, 25 fields with name 256 and value 1024, footer 2048, and 6000 characters
across the whole embed; message ``content`` 2000. Mentions are disabled so a
``reason`` text can never ping ``@everyone``.
"""

from __future__ import annotations

from typing import Any

from canaryd.core.events import Event
from canaryd.notifiers.text import (
    RenderOptions,
    clip,
    colour,
    describe,
    facts,
    heading,
    rfc3339,
)

CONTENT_TYPE = "application/json"

TITLE_MAX = 256
DESCRIPTION_MAX = 4096
FIELDS_MAX = 25
FIELD_NAME_MAX = 256
FIELD_VALUE_MAX = 1024
USERNAME_MAX = 80
EMBED_TOTAL_MAX = 6000

_MARKDOWN = str.maketrans({c: f"\\{c}" for c in "\\*_~`|"})


def escape(text: str) -> str:
    """Escape Discord markdown so metric names like ``http_5xx`` are shown as written."""
    return text.translate(_MARKDOWN)


def embed(event: Event) -> dict[str, Any]:
    """The embed for ``event``, within Discord's per-field and total limits."""
    head = clip(heading(event), TITLE_MAX)
    description = clip(escape(describe(event)), DESCRIPTION_MAX)
    footer = f"canaryd · {event.name}"
    budget = EMBED_TOTAL_MAX - len(head) - len(description) - len(footer)
    fields: list[dict[str, Any]] = []
    for label, value in facts(event)[:FIELDS_MAX]:
        name, text = clip(label, FIELD_NAME_MAX), clip(escape(value), FIELD_VALUE_MAX)
        budget -= len(name) + len(text)
        if budget < 0:
            break
        fields.append({"name": name, "value": text, "inline": len(text) <= 40})
    return {
        "title": head,
        "description": description,
        "color": colour(event),
        "fields": fields,
        "footer": {"text": footer},
        "timestamp": rfc3339(event.time),
    }


def render(event: Event, options: RenderOptions) -> dict[str, Any]:
    """Render the webhook message; ``username`` overrides the webhook's name.

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    message: dict[str, Any] = {"embeds": [embed(event)], "allowed_mentions": {"parse": []}}
    if options.username:
        message["username"] = clip(options.username, USERNAME_MAX)
    return message
