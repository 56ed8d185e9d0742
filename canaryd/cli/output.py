"""What the client commands print: one place that escapes text from outside for a terminal."""

from __future__ import annotations

import sys

from canaryd.terminal import escape_lines


def say(text: str, *, err: bool = False, flush: bool = False) -> None:
    """Print a human-readable line: control characters escaped (docs/reliability.md)."""
    print(escape_lines(text), file=sys.stderr if err else sys.stdout, flush=flush)
