"""Slack incoming webhooks: a Block Kit message with a plain-text fallback.

Layout: a ``header`` (emoji + title), a ``section`` with the one-line summary,
a ``section`` of ``fields`` (canary, revision, phase, weights, failed checks,
metric, value and bound, reason...) and a ``context`` line with the time.

Block Kit limits (docs.slack.dev, Block Kit reference): header text 150
characters, section text 3000, at most 10 fields of 2000 characters each,
context elements 10. Every text is clipped to its limit. ``mrkdwn`` text has
``&``, ``<`` and ``>`` escaped (``91.8 < min 99`` must not open a link); the
``plain_text`` header needs no escaping.
"""

from __future__ import annotations

from typing import Any

from canaryd.core.events import Event
from canaryd.notifiers.text import (
    RenderOptions,
    clip,
    clip_escaped,
    describe,
    facts,
    footer,
    heading,
    summary,
)

CONTENT_TYPE = "application/json"

HEADER_MAX = 150
SECTION_TEXT_MAX = 3000
FIELDS_MAX = 10
FIELD_TEXT_MAX = 2000
FALLBACK_MAX = 3000
"""The ``text`` fallback (notifications, old clients); Slack truncates at 40 000 anyway."""

ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def mrkdwn(text: str, limit: int) -> dict[str, str]:
    """A ``mrkdwn`` text object, escaped and clipped to ``limit`` characters."""
    return {"type": "mrkdwn", "text": clip_escaped(text, limit, ENTITIES)}


def _field(label: str, value: str) -> dict[str, str]:
    label_part = clip_escaped(label, 100, ENTITIES)
    room = FIELD_TEXT_MAX - len(label_part) - 5  # "*", "*", "\n" and some slack
    return {"type": "mrkdwn", "text": f"*{label_part}*\n{clip_escaped(value, room, ENTITIES)}"}


def blocks(event: Event) -> list[dict[str, Any]]:
    """The Block Kit blocks for ``event``."""
    header = clip(heading(event), HEADER_MAX)
    fields = [_field(label, value) for label, value in facts(event)][:FIELDS_MAX]
    out: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "section", "text": mrkdwn(describe(event), SECTION_TEXT_MAX)},
    ]
    if fields:
        out.append({"type": "section", "fields": fields})
    out.append(
        {
            "type": "context",
            "elements": [mrkdwn(footer(event), 2000)],
        }
    )
    return out


def render(event: Event, options: RenderOptions) -> dict[str, Any]:
    """Render the incoming-webhook message for ``event``.

    ``channel`` and ``username`` are sent when set; Slack honours them only
    for legacy incoming webhooks (app webhooks post to their own channel).

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    message: dict[str, Any] = {
        "text": clip_escaped(summary(event), FALLBACK_MAX, ENTITIES),
        "blocks": blocks(event),
    }
    return message | options.sender()
