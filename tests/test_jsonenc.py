"""The reused JSON encoder writes what ``json.JSONEncoder`` writes with compact separators.

The same JSON value, byte for byte but for the spelling of small floats, for every
document canaryd writes (store rows, API answers, log lines).
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canaryd.jsonenc import COMPACT, make_encoder

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


class Odd:
    """A value JSON has no type for."""

    def __repr__(self) -> str:
        return "<odd ü>"


def _floats(value: Any) -> bool:
    """Whether ``value`` holds a float anywhere."""
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(map(_floats, value.values()))
    return isinstance(value, list) and any(map(_floats, value))


def _value(text: str) -> str:
    """The JSON value of ``text`` in one spelling (the standard library's)."""
    return json.dumps(json.loads(text))


@given(JSON)
def test_same_output_as_the_stdlib_encoder(value: Any) -> None:
    """The same value as the stdlib's compact encoder, the same bytes without floats."""
    ours = make_encoder(repr)(value)
    theirs = json.JSONEncoder(separators=COMPACT, default=repr).encode(value)
    assert _value(ours) == _value(theirs)
    if not _floats(value):
        assert ours == theirs


@given(JSON)
def test_nan_refused_where_the_stdlib_refuses_it(value: Any) -> None:
    """With allow_nan=False both raise ValueError on the same values, else agree."""
    ours = make_encoder(str, allow_nan=False)
    theirs = json.JSONEncoder(separators=COMPACT, default=str, allow_nan=False)
    try:
        expected = theirs.encode(value)
    except ValueError:
        with pytest.raises(ValueError):
            ours(value)
    else:
        assert _value(ours(value)) == _value(expected)


@dataclasses.dataclass
class Point:
    """A dataclass: orjson would write it as an object, json calls ``default``."""

    x: float


class Score(float):
    """A float subclass (as numpy's float64 is)."""


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"v": 1e-05, "w": None}, '{"v":0.00001,"w":null}'),
        ({"v": math.nan, "w": None}, '{"v":NaN,"w":null}'),
        ([math.inf], "[Infinity]"),
        ({"v": "é\x85\u202e", "w": "\x1b"}, '{"v":"\\u00e9\\u0085\\u202e","w":"\\u001b"}'),
        ("\x7f", '"\\u007f"'),
        ({"t": (1, None)}, '{"t":[1,null]}'),
        ({"p": Point(1.5)}, '{"p":"Point(x=1.5)"}'),
        ([Score(0.5)], "[0.5]"),
        ([2**70], f"[{2**70}]"),
        ({1: "a"}, '{"1":"a"}'),
    ],
    ids=[
        "orjson",
        "nan",
        "infinity",
        "non-ascii",
        "del",
        "tuple",
        "dataclass",
        "float-subclass",
        "big-int",
        "int-key",
    ],
)
def test_compact_encoder_writes_what_the_stdlib_writes(value: Any, expected: str) -> None:
    """orjson's fast answer where it agrees (small floats spelt out), the stdlib's elsewhere."""
    assert make_encoder(repr)(value) == expected


def test_default_bare_strings_and_non_finite_floats() -> None:
    """``default`` is used for unknown types; bare strings and infinities are encoded."""
    encode = make_encoder(repr)
    assert encode({"v": Odd(), "x": [math.inf, -math.inf]}) == (
        '{"v":"<odd \\u00fc>","x":[Infinity,-Infinity]}'
    )
    assert encode("é\n") == '"\\u00e9\\n"'
    assert math.isnan(json.loads(encode(math.nan)))
    with pytest.raises(ValueError):
        make_encoder(str, allow_nan=False)({"v": math.nan})
