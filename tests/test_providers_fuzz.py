"""Whatever Graphite, InfluxDB or a web endpoint answers: a number, no data, or a ProviderError."""

from __future__ import annotations

import contextlib
import json
import math
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryd.config import WebProvider
from canaryd.errors import ProviderError
from canaryd.providers.graphite import _series, all_values, last_value
from canaryd.providers.influxdb import flux_rows, influxql_rows
from canaryd.providers.influxdb import last_value as influx_last
from canaryd.providers.transport import Response
from canaryd.providers.web import Web

pytestmark = pytest.mark.slow  # hundreds of generated answers per test

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_scalar = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**400), max_value=10**400)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["NaN", "1.5", "+Inf", "1e999"])
)
_json = st.recursive(
    _scalar,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)
_points = st.lists(st.lists(_scalar, min_size=0, max_size=3), max_size=4)
_graphite = (
    st.lists(
        st.fixed_dictionaries({"target": st.text(max_size=4), "datapoints": _points | _json}),
        max_size=3,
    )
    | _json
)
_influxql = (
    st.fixed_dictionaries(
        {
            "results": st.lists(
                st.fixed_dictionaries(
                    {
                        "series": st.lists(
                            st.fixed_dictionaries(
                                {
                                    "columns": st.lists(
                                        st.sampled_from(["time", "v", "w"]), max_size=3
                                    ),
                                    "values": st.lists(st.lists(_scalar, max_size=3), max_size=3)
                                    | _json,
                                }
                            ),
                            max_size=2,
                        )
                        | _json
                    }
                )
                | _json,
                max_size=2,
            )
        }
    )
    | _json
)
_statuses = st.sampled_from([200, 200, 200, 400, 401, 429, 500, 503])


def _body(doc: Any, garbage: bytes, raw: bool) -> bytes:
    return garbage if raw else json.dumps(doc).encode()


def _check(value: float | None) -> None:
    assert value is None or (isinstance(value, float) and not math.isnan(value))


@FUZZ
@given(doc=_graphite, status=_statuses, garbage=st.binary(max_size=40), raw=st.booleans())
def test_any_graphite_answer(doc: Any, status: int, garbage: bytes, raw: bool) -> None:
    """Any Graphite answer parses to a value, no data or a ProviderError."""
    try:
        series = _series(Response(status, _body(doc, garbage, raw), True))
        _check(last_value(series))
        assert all(isinstance(v, float) for v in all_values(series))
    except ProviderError:
        pass


@FUZZ
@given(doc=_influxql, status=_statuses, garbage=st.binary(max_size=40), raw=st.booleans())
def test_any_influxql_answer(doc: Any, status: int, garbage: bytes, raw: bool) -> None:
    """Any InfluxQL answer parses to a value, no data or a ProviderError."""
    with contextlib.suppress(ProviderError):
        _check(influx_last(influxql_rows(Response(status, _body(doc, garbage, raw), True))))


_cell = st.text(alphabet=',\r\n"#_valuetrsbldg0123456789.eE-', max_size=12)


@FUZZ
@given(
    lines=st.lists(
        st.sampled_from(
            [
                "#datatype,string,long,double",
                "#datatype,string,long,string",
                "#group,false,false,false",
                ",result,table,_value",
                ",error,reference",
                "",
            ]
        )
        | _cell,
        max_size=8,
    ),
    status=_statuses,
)
def test_any_flux_answer(lines: list[str], status: int) -> None:
    """Any annotated CSV (or error) answer parses to a value, no data or a ProviderError."""
    with contextlib.suppress(ProviderError):
        _check(influx_last(flux_rows(Response(status, "\r\n".join(lines).encode(), True))))


@FUZZ
@given(doc=_json, status=_statuses, garbage=st.binary(max_size=40), raw=st.booleans())
def test_any_web_answer(doc: Any, status: int, garbage: bytes, raw: bool) -> None:
    """Any web answer gives the value at the path, no data or a ProviderError."""
    cfg = WebProvider.model_validate(
        {"type": "web", "address": "http://127.0.0.1:1", "jsonPath": "$.a[0]"}
    )
    wrapped = {"a": [doc]} if isinstance(doc, int) else doc
    with contextlib.suppress(ProviderError):
        _check(Web(cfg)._value(Response(status, _body(wrapped, garbage, raw), True)))


def test_json_nested_too_deeply_is_a_provider_error() -> None:
    """An answer nested beyond the decoder's recursion limit is a ProviderError, not a crash."""
    deep = Response(200, b"[" * 30_000 + b"]" * 30_000, True)
    cfg = WebProvider.model_validate(
        {"type": "web", "address": "http://127.0.0.1:1", "jsonPath": "$.a"}
    )
    parsers = [_series, influxql_rows, Web(cfg)._value]
    for parse in parsers:
        try:
            parse(deep)
        except ProviderError:
            continue
        raise AssertionError(f"{parse} accepted 30,000 nested arrays")
