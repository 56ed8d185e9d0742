"""The JSON encoder of every document canaryd writes, built once and reused.

Store rows, API answers and log lines are all compact JSON (``{"a":1}``), written
by ``orjson`` (~0.5 us for a state or an event, against ~4.5 us for the
standard library), checked, and written by the standard library's public
``json.JSONEncoder`` instead when orjson would write something else: a
non-finite float (orjson writes ``null``; the standard library ``NaN``, or a
ValueError with ``allow_nan=False``), a non-ASCII or DEL character (written
``\\uXXXX``, as ``ensure_ascii`` does, so no control character reaches a
terminal raw), a type orjson does not write the same way (a float subclass, a
dataclass, a datetime, an integer beyond 64 bits, a non-string key: ``default``
decides, as for ``json.dumps``). The result is the same JSON value
``json.JSONEncoder`` writes, byte for byte but for the spelling of small floats
(``1e-05`` is written ``0.00001``). Left to orjson although the standard
library would call ``default``: a plain ``Enum`` (orjson writes its value) and
a ``UUID`` (its text); canaryd writes neither (its enums are ``StrEnum``s,
which both write as their value). See docs/design.md, "JSON".
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

COMPACT = (",", ":")
"""The separators of every document: orjson's, which it cannot change."""

_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
"""Dataclasses and datetimes go to ``default`` (the standard library's path), as in json."""


def make_encoder(default: Callable[[Any], Any], *, allow_nan: bool = True) -> Callable[[Any], str]:
    """An ``encode(value) -> str``: compact, ``ensure_ascii``, keys in their order, no indent.

    orjson's answer where it is what ``json.JSONEncoder`` with the same options
    writes, the standard library's elsewhere (see the module's docstring).

    Args:
        default: called for values JSON has no type for (as ``json.dumps``'s).
        allow_nan: write NaN/Infinity (JavaScript style) instead of raising ValueError.

    Raises (the returned function):
        ValueError: a non-finite float with ``allow_nan=False``.
    """
    stdlib = json.JSONEncoder(separators=COMPACT, default=default, allow_nan=allow_nan).encode
    dumps, loads, error = orjson.dumps, orjson.loads, orjson.JSONEncodeError

    def encode(value: Any) -> str:
        try:
            out = dumps(value, None, _ORJSON_OPTIONS)
        except error:  # a type orjson leaves to default, a big integer, a non-string key...
            return stdlib(value)
        if not out.isascii() or b"\x7f" in out:  # ensure_ascii escapes these
            return stdlib(value)
        # orjson writes NaN and infinities as null: a document with a null is read back
        # (~2 us); if it differs (a non-finite float, or a tuple: a list once read), the
        # standard library writes it
        if b"null" in out and loads(out) != value:
            return stdlib(value)
        return out.decode()

    return encode


def map_leaves(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """``value`` with ``leaf`` applied to everything but its dicts, lists and tuples.

    Dict keys are kept; lists and tuples become lists (as they are once in JSON).
    The log lines' redaction and the store's NaN-safe encoding both walk values so.
    """
    if isinstance(value, dict):
        return {k: map_leaves(v, leaf) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [map_leaves(v, leaf) for v in value]
    return leaf(value)
