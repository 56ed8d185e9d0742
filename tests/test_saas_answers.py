"""Any answer a SaaS API could send is a value, no data or a ProviderError: never a traceback."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryd.config import DatadogProvider, DynatraceProvider
from canaryd.errors import ProviderError
from canaryd.providers import newrelic
from canaryd.providers.datadog import Datadog
from canaryd.providers.dynatrace import Dynatrace
from canaryd.providers.transport import Response

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
)
KEYS = [
    "series",
    "pointlist",
    "status",
    "errors",
    "error",
    "data",
    "attributes",
    "columns",
    "type",
    "values",
    "actor",
    "account",
    "nrql",
    "results",
    "result",
    "message",
    "extensions",
    "errorClass",
    "count",
    "facet",
    "beginTimeSeconds",
]
"""Keys of the APIs' answers, so that generated documents reach the parsers' deep branches."""

JSON = st.recursive(
    SCALARS,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(KEYS), inner, max_size=4)
    ),
    max_leaves=20,
)

DATADOG = Datadog(
    DatadogProvider.model_validate(
        {"type": "datadog", "api_key_file": "/k", "application_key_file": "/a"}
    )
)
DYNATRACE = Dynatrace(
    DynatraceProvider.model_validate(
        {"type": "dynatrace", "address": "https://x.example", "api_token_file": "/t"}
    )
)

PARSERS: dict[str, Callable[[Response], Any]] = {
    "datadog-v1": DATADOG._v1_instant,
    "datadog-v1-range": DATADOG._v1_range,
    "datadog-v2": DATADOG._v2_scalar,
    "datadog-v2-range": DATADOG._v2_range,
    "newrelic": newrelic._instant,
    "newrelic-range": newrelic._range,
    "dynatrace": DYNATRACE._instant,
    "dynatrace-range": DYNATRACE._range,
}


@pytest.mark.parametrize("name", sorted(PARSERS))
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=JSON, status=st.sampled_from([200, 400, 401, 429, 500]))
def test_any_answer_is_a_value_no_data_or_provider_error(name: str, doc: Any, status: int) -> None:
    """Whatever JSON an API answers with, parsing returns a number/None/list or raises
    ProviderError."""
    body = json.dumps(doc, allow_nan=True).encode()
    try:
        result = PARSERS[name](Response(status, body, True))
    except ProviderError:
        return
    if isinstance(result, list):
        assert all(isinstance(v, float) for v in result)
    else:
        assert result is None or (isinstance(result, float) and not math.isnan(result))
