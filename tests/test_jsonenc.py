"""The reused JSON encoders write exactly what ``json.JSONEncoder`` writes."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from canaryd.jsonenc import make_encoder

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


@given(JSON)
def test_same_output_as_the_stdlib_encoder(value: Any) -> None:
    """Compact and default separators, NaN allowed: byte for byte the stdlib's output."""
    for separators in ((",", ":"), (", ", ": ")):
        ours = make_encoder(repr, separators=separators)
        theirs = json.JSONEncoder(separators=separators, default=repr)
        assert ours(value) == theirs.encode(value)


@given(JSON)
def test_nan_refused_where_the_stdlib_refuses_it(value: Any) -> None:
    """With allow_nan=False both raise ValueError on the same values, else agree."""
    ours = make_encoder(str, separators=(",", ":"), allow_nan=False)
    theirs = json.JSONEncoder(separators=(",", ":"), default=str, allow_nan=False)
    try:
        expected = theirs.encode(value)
    except ValueError:
        with pytest.raises(ValueError):
            ours(value)
    else:
        assert ours(value) == expected


def test_default_bare_strings_and_non_finite_floats() -> None:
    """``default`` is used for unknown types; bare strings and infinities are encoded."""
    encode = make_encoder(repr)
    assert encode({"v": Odd(), "x": [math.inf, -math.inf]}) == (
        '{"v": "<odd \\u00fc>", "x": [Infinity, -Infinity]}'
    )
    assert encode("é\n") == '"\\u00e9\\n"'
    assert math.isnan(json.loads(encode(math.nan)))
    with pytest.raises(ValueError):
        make_encoder(str, allow_nan=False)({"v": math.nan})
