"""Microsoft Teams: an Adaptive Card posted to a Workflows (or legacy) incoming webhook.

Office 365 connectors and their ``MessageCard`` format are retired; Teams
Workflows webhooks take a ``message`` whose attachment is an Adaptive Card:
``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "content": {...}}]}``. The card
uses schema version 1.4 (supported by Teams on every client): a coloured
title, the one-line summary and a ``FactSet``.
"""

from __future__ import annotations

from typing import Any

from canaryd.config.models import Severity
from canaryd.core.events import Event
from canaryd.notifiers.text import (
    RenderOptions,
    clip,
    describe,
    facts,
    footer,
    heading,
    severity_of,
)

CONTENT_TYPE = "application/json"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_VERSION = "1.4"
TEXT_MAX = 2000
"""Per text block; Teams rejects cards above about 28 KB in total."""

_TITLE_COLOUR = {Severity.INFO: "Accent", Severity.WARN: "Warning", Severity.ERROR: "Attention"}


def _title_colour(event: Event) -> str:
    return "Good" if event.name == "rollout.promoted" else _TITLE_COLOUR[severity_of(event)]


def card(event: Event) -> dict[str, Any]:
    """The Adaptive Card (the attachment's ``content``) for ``event``."""
    fact_set = [{"title": label, "value": clip(value, TEXT_MAX)} for label, value in facts(event)]
    return {
        "$schema": CARD_SCHEMA,
        "type": "AdaptiveCard",
        "version": CARD_VERSION,
        "msteams": {"width": "Full"},
        "body": [
            {
                "type": "TextBlock",
                "text": clip(heading(event), 200),
                "size": "Large",
                "weight": "Bolder",
                "color": _title_colour(event),
                "wrap": True,
            },
            {"type": "TextBlock", "text": clip(describe(event), TEXT_MAX), "wrap": True},
            {"type": "FactSet", "facts": fact_set},
            {
                "type": "TextBlock",
                "text": footer(event),
                "isSubtle": True,
                "size": "Small",
                "wrap": True,
            },
        ],
    }


def render(event: Event, options: RenderOptions) -> dict[str, Any]:
    """Render the Teams message (``channel`` and ``username`` do not apply).

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    return {
        "type": "message",
        "summary": clip(describe(event), 200),
        "attachments": [
            {"contentType": CARD_CONTENT_TYPE, "contentUrl": None, "content": card(event)}
        ],
    }
