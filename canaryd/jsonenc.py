"""JSON encoders built once and reused: every tick writes several JSON documents.

``json.JSONEncoder.encode`` builds a new C encoder (and a dict for its circular
reference check) on every call, half the cost of encoding a small document.
:func:`make_encoder` builds the C encoder once, without the circular check
(canaryd encodes plain data it built itself), and falls back to the Python
encoder where the C one is missing. Output is byte for byte what
``json.JSONEncoder`` with the same options writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _stdlib
from typing import Any


def make_encoder(
    default: Callable[[Any], Any],
    *,
    separators: tuple[str, str] = (", ", ": "),
    allow_nan: bool = True,
) -> Callable[[Any], str]:
    """An ``encode(value) -> str`` with ``ensure_ascii``, unsorted keys, no indent.

    Args:
        default: called for values JSON has no type for (as ``json.dumps``'s).
        separators: ``(item, key)`` separators.
        allow_nan: write NaN/Infinity (JavaScript style) instead of raising ValueError.

    Raises (the returned function):
        ValueError: a non-finite float with ``allow_nan=False``.
    """
    item, key = separators
    c_make_encoder = getattr(_stdlib, "c_make_encoder", None)
    if c_make_encoder is None:  # pragma: no cover - CPython always has _json
        return json.JSONEncoder(separators=separators, default=default, allow_nan=allow_nan).encode
    encode = c_make_encoder(
        None,  # markers: no circular reference check
        default,
        _stdlib.encode_basestring_ascii,
        None,  # indent
        key,
        item,
        False,  # sort_keys
        False,  # skipkeys
        allow_nan,
    )

    def dumps(value: Any) -> str:
        if isinstance(value, str):  # what JSONEncoder.encode does for a bare string
            return str(_stdlib.encode_basestring_ascii(value))
        return "".join(encode(value, 0))

    return dumps
