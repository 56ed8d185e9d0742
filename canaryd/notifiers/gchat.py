"""Google Chat incoming webhooks: a ``text`` line plus a ``cardsV2`` card.

The ``text`` is what notifications and screen readers show; the card has a
header (title, canary and revision) and one section of ``decoratedText``
widgets, one per fact. Card text accepts a small HTML subset, so values are
HTML-escaped (``91.8 < min 99`` must stay literal).
"""

from __future__ import annotations

import html
from typing import Any

from canaryd.core.events import Event
from canaryd.notifiers.text import RenderOptions, clip, facts, footer, heading, summary

CONTENT_TYPE = "application/json; charset=UTF-8"

TEXT_MAX = 4000
WIDGET_TEXT_MAX = 2000
WIDGETS_MAX = 100
"""Google Chat ignores widgets beyond 100 per card."""


def _widget(label: str, value: str) -> dict[str, Any]:
    return {
        "decoratedText": {
            "topLabel": html.escape(clip(label, 200), quote=False),
            "text": html.escape(clip(value, WIDGET_TEXT_MAX), quote=False),
            "wrapText": True,
        }
    }


def card(event: Event) -> dict[str, Any]:
    """The ``cardsV2`` entry for ``event``."""
    subtitle = f"{event.canary} {event.revision}" if event.revision else event.canary
    widgets = [_widget(label, value) for label, value in facts(event)][: WIDGETS_MAX - 1]
    widgets.append({"textParagraph": {"text": footer(event)}})
    return {
        "cardId": f"canaryd-{event.name}",
        "card": {
            "header": {
                "title": clip(heading(event), 200),
                "subtitle": clip(subtitle, 200),
            },
            "sections": [{"widgets": widgets}],
        },
    }


def render(event: Event, options: RenderOptions) -> dict[str, Any]:
    """Render the Chat message (``channel`` and ``username`` do not apply).

    Raises:
        KeyError: the event's name is not in the vocabulary.
    """
    return {"text": clip(summary(event), TEXT_MAX), "cardsV2": [card(event)]}
