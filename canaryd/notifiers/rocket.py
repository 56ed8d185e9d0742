"""Rocket.Chat incoming webhooks: a summary line plus one Slack-style attachment.

Rocket.Chat's incoming webhooks take Slack's legacy message shape: ``text``,
``channel``, ``username``, ``icon_emoji`` and ``attachments`` with ``color``,
``author_name``, ``title``, ``fields`` (``title``/``value``/``short``) and
``ts``. The attachment names the canary as ``name.namespace`` (Flagger's
``author_name``) and carries the same facts as every other format.

A message's text is limited to 5000 characters by default (Rocket.Chat's
``Message_MaxAllowedSize``); every text is clipped below that. Rocket.Chat
renders markdown and turns ``@name``, ``@all`` and ``@here`` into mentions, so
an ``@`` coming from an event (a reason echoed from a webhook's answer) is
followed by a zero-width space: nobody is paged by a canary's error text.
"""

from __future__ import annotations

from typing import Any

from canaryd.core.events import Event
from canaryd.notifiers.text import (
    RenderOptions,
    clip,
    colour,
    facts,
    heading,
    rfc3339,
    summary,
)

CONTENT_TYPE = "application/json"

TEXT_MAX = 5000
TITLE_MAX = 256
FIELDS_MAX = 20
FIELD_VALUE_MAX = 1000
SHORT_FIELD = 40
"""Values up to this long are shown side by side (``short``)."""

ICON = ":rocket:"


def unmention(text: str) -> str:
    """Keep ``@all``/``@here``/``@user`` in ``text`` from notifying anyone."""
    return text.replace("@", "@\u200b")


def attachment(event: Event) -> dict[str, Any]:
    """The attachment for ``event``: colour bar, canary, title, facts and time."""
    fields = []
    for label, value in facts(event)[:FIELDS_MAX]:
        text = clip(unmention(value), FIELD_VALUE_MAX)
        fields.append({"title": label, "value": text, "short": len(text) <= SHORT_FIELD})
    return {
        "color": f"#{colour(event):06X}",
        "author_name": f"{event.canary_name}.{event.namespace}",
        "title": clip(heading(event), TITLE_MAX),
        "fields": fields,
        "ts": rfc3339(event.time),
    }


def render(event: Event, options: RenderOptions) -> dict[str, Any]:
    """Render the incoming-webhook message; ``channel`` and ``username`` are sent when set.

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    message: dict[str, Any] = {
        "text": clip(unmention(summary(event)), TEXT_MAX),
        "icon_emoji": ICON,
        "attachments": [attachment(event)],
    }
    return message | options.sender()
