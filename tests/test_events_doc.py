"""docs/events.md is generated from the vocabulary in code and must not drift."""

from __future__ import annotations

import re
from pathlib import Path

from canaryd.core.events import EVENTS, events_markdown

ROOT = Path(__file__).resolve().parent.parent


def test_events_doc_matches_the_code() -> None:
    """The committed docs/events.md equals what the code generates."""
    assert (ROOT / "docs" / "events.md").read_text() == events_markdown()


def test_every_event_the_code_emits_is_documented() -> None:
    """Every event name used in the package source is in the vocabulary."""
    used: set[str] = set()
    pattern = re.compile(r'(?:log\.\w+\(\s*|_event\(spec, \w+, |Emit\(Event\()"([a-z_]+\.[a-z_]+)"')
    for path in (ROOT / "canaryd").rglob("*.py"):
        used |= set(pattern.findall(path.read_text()))
    assert used - set(EVENTS) == set()
