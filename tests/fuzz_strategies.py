"""Hypothesis settings and JSON strategies shared by the test_fuzz_* modules (bad input)."""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

FUZZ = settings(
    max_examples=150,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# --------------------------------------------------------------------------- Prometheus answers

WEIRD_NUMBERS = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "+Inf",
            "-Inf",
            "nan",
            "Infinity",
            "1e999",
            "-1e999",
            "0x10",
            " 1 ",
            "1_0",
            "",
            "12",
        ]
    ),
    st.integers(min_value=-(10**600), max_value=10**600),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
)


def json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and mappings of ``inner``, keyed mostly with Prometheus's own keys."""
    return st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(
            [
                "status",
                "data",
                "resultType",
                "result",
                "value",
                "values",
                "metric",
                "error",
                "errorType",
            ]
        )
        | st.text(max_size=4),
        inner,
        max_size=4,
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | WEIRD_NUMBERS,
    json_containers,
    max_leaves=20,
)
