"""Text from outside made safe for a terminal: control characters become visible escapes.

Failure reasons, revisions and metadata come from Prometheus, webhooks, routers
and API clients; printed raw, an ``ESC`` sequence could move the cursor and draw
a green "promoted" line over "rolled back". Every human-readable output (``canaryd
status``, ``rollout --wait``, the other client commands, ``check``, the demo view)
passes what it prints through :func:`escape` (docs/reliability.md, "Terminal output").
"""

from __future__ import annotations

import re

_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
"""C0 and C1 controls, DEL (ESC among them), line separators and bidirectional overrides."""

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\x1b"}


def _visible(match: re.Match[str]) -> str:
    char = match[0]
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape(text: str) -> str:
    """``text`` with every control character written as a visible escape (``\\x1b``, ``\\n``).

    The result holds no control character at all, so it is one line, and
    escaping it again changes nothing.
    """
    return _CONTROL.sub(_visible, text)


def escape_lines(text: str) -> str:
    """Like :func:`escape`, but the line breaks of ``text`` itself are kept."""
    return "\n".join(escape(line) for line in text.split("\n"))
