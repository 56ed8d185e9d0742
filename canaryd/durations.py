"""Durations as operators write them: ``30s``, ``1m``, ``1h30m``, ``500ms``."""

from __future__ import annotations

import re

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(text: str | int | float) -> float:
    """Parse a duration into seconds.

    Args:
        text: ``"1h30m"``, ``"30s"``, ``"250ms"``, or a plain number of seconds.

    Returns:
        The duration in seconds (never negative).

    Raises:
        ValueError: the text is not a duration.
    """
    if isinstance(text, bool):
        raise ValueError("expected a duration such as 30s, 1m or 1h30m")
    if isinstance(text, int | float):
        if text < 0 or text != text:
            raise ValueError("a duration cannot be negative")
        return float(text)
    if not isinstance(text, str):
        raise ValueError("expected a duration such as 30s, 1m or 1h30m")
    s = text.strip()
    try:
        value = float(s)
    except ValueError:
        pass
    else:
        return parse_duration(value)
    pos, total = 0, 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if pos != len(s) or not s:
        raise ValueError(f"invalid duration {text!r}: expected e.g. 30s, 1m, 1h30m or 500ms")
    return total
