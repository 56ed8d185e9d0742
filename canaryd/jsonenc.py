"""JSON encoders built once and reused: every tick writes several JSON documents.

Compact documents (the store's rows, the API's answers) are written by
``orjson`` (~0.5 us for a state or an event, against ~4.5 us for the C encoder
of the standard library), checked, and written by the standard library instead
when orjson would write something else: a non-finite float (orjson writes
``null``), a non-ASCII or DEL character (written ``\\uXXXX``, as
``ensure_ascii`` does, so no control character reaches a terminal raw), a type
orjson does not write the same way (a float or int subclass, a dataclass, a
datetime, an integer beyond 64 bits, a non-string key: ``default`` decides, as
for ``json.dumps``). The result is the same JSON value ``json.JSONEncoder``
writes, byte for byte but for the spelling of small floats (``1e-05`` is
written ``0.00001``). See docs/design.md, "JSON".

Documents with other separators (the log lines: ``", "`` and ``": "``, which
log consumers match on) are written by the C encoder of the standard library,
built once without the per-call set-up and the circular reference check
(canaryd encodes plain data it built itself): byte for byte what
``json.JSONEncoder`` with the same options writes.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _stdlib
from typing import Any

import orjson

COMPACT = (",", ":")
"""The separators of the documents orjson writes."""

_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATACLASS | orjson.OPT_PASSTHROUGH_DATETIME
"""Dataclasses and datetimes go to ``default`` (the standard library's path), as in json."""


def make_encoder(
    default: Callable[[Any], Any],
    *,
    separators: tuple[str, str] = (", ", ": "),
    allow_nan: bool = True,
) -> Callable[[Any], str]:
    """An ``encode(value) -> str`` with ``ensure_ascii``, unsorted keys, no indent.

    Compact ``separators`` (:data:`COMPACT`) take orjson's path (see the module's
    docstring), any others the standard library's.

    Args:
        default: called for values JSON has no type for (as ``json.dumps``'s).
        separators: ``(item, key)`` separators.
        allow_nan: write NaN/Infinity (JavaScript style) instead of raising ValueError.

    Raises (the returned function):
        ValueError: a non-finite float with ``allow_nan=False``.
    """
    stdlib = _stdlib_encoder(default, separators, allow_nan)
    if separators != COMPACT:
        return stdlib
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


def _stdlib_encoder(
    default: Callable[[Any], Any], separators: tuple[str, str], allow_nan: bool
) -> Callable[[Any], str]:
    """``json.JSONEncoder(...).encode`` without its per-call set-up (the C encoder, built once)."""
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
