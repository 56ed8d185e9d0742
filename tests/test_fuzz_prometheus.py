"""Any Prometheus answer, property-based: it parses to a value, "no data" or a ProviderError."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from fuzz_strategies import FUZZ, WEIRD_NUMBERS, json_values
from hypothesis import given
from hypothesis import strategies as st

from canaryd.errors import ProviderError
from canaryd.providers.prometheus import _answer_data, _instant_value, _range_values

_sample = st.one_of(
    st.tuples(st.floats(0, 2e9), WEIRD_NUMBERS).map(list),
    WEIRD_NUMBERS,
    st.lists(WEIRD_NUMBERS, max_size=3),
)
_result_kind = st.sampled_from(["vector", "scalar", "matrix", "string", "bogus", None])


@st.composite
def prometheus_documents(draw: st.DrawFn) -> Any:
    """Answers shaped like Prometheus's, with wrong types and weird numbers where values go."""
    kind = draw(_result_kind)
    if kind == "scalar":
        result: Any = draw(_sample)
    elif kind == "matrix":
        result = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"metric": st.just({}), "values": st.lists(_sample, max_size=3)}
                ),
                max_size=2,
            )
        )
    else:
        result = draw(
            st.lists(st.fixed_dictionaries({"metric": st.just({}), "value": _sample}), max_size=2)
            | json_values
        )
    status = draw(st.sampled_from(["success", "error", "weird"]))
    return {
        "status": status,
        "data": {"resultType": kind, "result": result},
        "error": draw(json_values),
        "errorType": draw(json_values),
    }


def _assert_value(value: float | None) -> None:
    assert value is None or (isinstance(value, float) and not math.isnan(value))


@FUZZ
@given(
    doc=prometheus_documents() | json_values,
    status=st.sampled_from([200, 400, 422, 429, 500, 503]),
    garbage=st.binary(max_size=40),
    raw=st.booleans(),
)
@pytest.mark.slow
def test_any_prometheus_answer_is_a_value_no_data_or_a_provider_error(
    doc: Any, status: int, garbage: bytes, raw: bool
) -> None:
    """Whatever Prometheus answers, parsing gives a number, "no data" or ProviderError."""
    body = garbage if raw else json.dumps(doc).encode()
    try:
        data = _answer_data(status, body, True)
    except ProviderError:
        return
    for parse in (_instant_value, _range_values):
        try:
            got = parse(data)
        except ProviderError:
            continue
        if parse is _instant_value:
            _assert_value(got)  # type: ignore[arg-type]
        else:
            assert isinstance(got, list) and all(isinstance(v, float) for v in got)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", ProviderError),
        ([0, True], ProviderError),
        ([0, 10**400], ProviderError),
        ([0, "+Inf"], math.inf),
        ([0, "NaN"], None),
    ],
    ids=[
        "string-not-a-pair",
        "boolean",
        "integer-beyond-float",
        "inf-is-a-value",
        "nan-is-no-data",
    ],
)
def test_sample_values_of_the_wrong_type_are_provider_errors(value: Any, expected: Any) -> None:
    """A sample must be a [time, number-or-numeric-string] pair; Inf is a value, NaN no data."""
    data = {"resultType": "vector", "result": [{"metric": {}, "value": value}]}
    if expected is ProviderError:
        with pytest.raises(ProviderError, match="unexpected result"):
            _instant_value(data)
    else:
        assert _instant_value(data) == expected
