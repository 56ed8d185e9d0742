"""The Datadog provider against a fake of its documented API (tests/fake_datadog.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from fake_datadog import API_KEY, APP_KEY, DatadogFake, rate_limited
from vendorfake import Canned, opened, secret

from canaryd.config import DatadogProvider
from canaryd.errors import ProviderError
from canaryd.providers.datadog import parse_v2

pytestmark = pytest.mark.anyio

Q = "sum:trace.http.request.errors{service:web,version:canary}.as_count()"


@pytest.fixture
async def fake(anyio_backend: str) -> AsyncIterator[DatadogFake]:
    """A running Datadog fake."""
    async with DatadogFake() as server:
        yield server  # type: ignore[misc]


def config(fake: DatadogFake, tmp_path: Path, **extra: Any) -> DatadogProvider:
    """A provider config for the fake with the right keys in files."""
    return DatadogProvider.model_validate(
        {
            "type": "datadog",
            "address": fake.url,
            "api_key_file": secret(tmp_path, "api", API_KEY),
            "application_key_file": secret(tmp_path, "app", APP_KEY),
            "timeout": "1s",
            **extra,
        }
    )


async def test_v1_request_carries_keys_and_the_lookback_window(
    fake: DatadogFake, tmp_path: Path
) -> None:
    """v1 is a GET of /api/v1/query with both key headers, from = to - lookback, to = now."""
    fake.put_now(Q, 4.0)
    async with opened(config(fake, tmp_path, lookback="5m")) as prov:
        before = time.time()
        assert await prov.query(Q, budget=5) == 4.0
    request = fake.requests[0]
    params = {k: v[0] for k, v in parse_qs(request.query).items()}
    assert (request.method, request.path, params["query"]) == ("GET", "/api/v1/query", Q)
    assert int(params["to"]) - int(params["from"]) == 300
    assert abs(int(params["to"]) - before) <= 2
    assert request.headers["DD-API-KEY"] == API_KEY
    assert request.headers["DD-APPLICATION-KEY"] == APP_KEY


async def test_v1_instant_is_the_latest_non_null_point(fake: DatadogFake, tmp_path: Path) -> None:
    """The most recent non-null point of the single series in the window is the value."""
    now = time.time()
    fake.put(Q, [(now - 3600, 99.0), (now - 120, 1.0), (now - 60, 2.5), (now - 30, None)])
    async with opened(config(fake, tmp_path)) as prov:
        assert await prov.query(Q, budget=5) == 2.5


@pytest.mark.parametrize(
    "points",
    [[], [(-30, None), (-10, None)], [(-3600, 5.0)]],
    ids=["no-series", "all-null", "only-before-window"],
)
async def test_v1_no_data_is_none(
    fake: DatadogFake, tmp_path: Path, points: list[tuple[float, float | None]]
) -> None:
    """No series in the window, or only null points, is no data (None), not an error."""
    now = time.time()
    if points:
        fake.put(Q, [(now + t, v) for t, v in points])
    async with opened(config(fake, tmp_path)) as prov:
        assert await prov.query(Q, budget=5) is None


async def test_v1_nan_point_is_no_data(fake: DatadogFake, tmp_path: Path) -> None:
    """A NaN point (JSON's non-standard NaN literal) counts as no data, like null."""
    body = b'{"status": "ok", "series": [{"pointlist": [[1, NaN]]}]}'
    fake.script(Canned(200, body))
    async with opened(config(fake, tmp_path)) as prov:
        assert await prov.query(Q, budget=5) is None


async def test_v1_several_series_is_an_error(fake: DatadogFake, tmp_path: Path) -> None:
    """A query grouped into several series fails: a metric query must give one number."""
    now = time.time()
    fake.put(Q, [(now - 10, 1.0)], [(now - 10, 2.0)])
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError, match="returned 2 series"):
            await prov.query(Q, budget=5)


async def test_v1_range_keeps_nulls_as_nan(fake: DatadogFake, tmp_path: Path) -> None:
    """A range query returns the series' values in time order, null kept as NaN."""
    now = time.time()
    fake.put(Q, [(now - 50, 1.0), (now - 40, None), (now - 30, 3.0)])
    async with opened(config(fake, tmp_path)) as prov:
        values = await prov.query_range(Q, start=now - 60, end=now, step=10, budget=5)
    assert [v if v == v else "nan" for v in values] == [1.0, "nan", 3.0]


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (
            Canned(400, {"errors": ["Error parsing query: unexpected token"]}),
            "datadog answered HTTP 400: Error parsing query: unexpected token",
        ),
        (
            Canned(200, {"status": "error", "error": "Rollup not supported"}),
            "datadog query error: Rollup not supported",
        ),
        (Canned(200, {"status": "ok", "series": "x"}), "unexpected result"),
        (Canned(200, b"<html>maintenance</html>"), "not JSON: <html>maintenance</html>"),
    ],
    ids=["errors-400", "status-error", "bad-shape", "not-json"],
)
async def test_error_bodies_fail_without_retry(
    fake: DatadogFake, tmp_path: Path, answer: Canned, message: str
) -> None:
    """Datadog's error bodies and unexpected answers fail at once with their text."""
    fake.script(answer)
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query(Q, budget=5)
    assert message in str(err.value)
    assert len(fake.requests) == 1


async def test_wrong_keys_fail_without_showing_them(fake: DatadogFake, tmp_path: Path) -> None:
    """A 403 for a wrong key fails at once and the error holds no key."""
    cfg = config(fake, tmp_path).model_copy(
        update={"api_key_file": secret(tmp_path, "wrong", "wrong-key-123456")}
    )
    async with opened(cfg) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query(Q, budget=5)
    assert str(err.value) == "datadog answered HTTP 403: Forbidden"
    assert len(fake.requests) == 1


async def test_echoed_keys_are_scrubbed_from_errors(fake: DatadogFake, tmp_path: Path) -> None:
    """A proxy page echoing the key headers reaches the error with the keys replaced."""
    fake.script(Canned(502, f"bad gateway for {API_KEY} / {APP_KEY}".encode()))
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query(Q, budget=0.5)
    assert "bad gateway for *** / ***" in str(err.value)
    assert API_KEY not in str(err.value) and APP_KEY not in str(err.value)


@pytest.mark.slow
async def test_rate_limit_waits_for_the_advertised_reset(fake: DatadogFake, tmp_path: Path) -> None:
    """A 429 with X-RateLimit-Reset 1 is retried once the reset has passed, within the budget."""
    fake.put_now(Q, 7.0)
    fake.script(rate_limited(reset=1))
    async with opened(config(fake, tmp_path)) as prov:
        started = time.monotonic()
        assert await prov.query(Q, budget=5) == 7.0
        waited = time.monotonic() - started
    assert len(fake.requests) == 2
    assert 1.0 <= waited < 4.0


async def test_rate_limit_beyond_the_budget_fails_at_once(
    fake: DatadogFake, tmp_path: Path
) -> None:
    """A reset later than the budget allows fails after one request instead of spending quota."""
    fake.script(rate_limited(reset=120))
    async with opened(config(fake, tmp_path)) as prov:
        started = time.monotonic()
        with pytest.raises(ProviderError) as err:
            await prov.query(Q, budget=5)
    assert time.monotonic() - started < 1.0
    assert 'HTTP 429 (rate limited): {"errors": ["Too many requests"]}' in str(err.value)
    assert "resets in 120.0s, after this check's budget" in str(err.value)
    assert len(fake.requests) == 1


async def test_server_errors_are_retried(fake: DatadogFake, tmp_path: Path) -> None:
    """A 503 and a 429 without reset are transient: the third attempt's value is returned."""
    fake.put_now(Q, 3.0)
    fake.script(Canned(503, {"errors": ["unavailable"]}), Canned(429, {"errors": ["slow down"]}))
    async with opened(config(fake, tmp_path)) as prov:
        assert await prov.query(Q, budget=5) == 3.0
    assert len(fake.requests) == 3


async def test_redirect_is_not_followed(fake: DatadogFake, tmp_path: Path) -> None:
    """A 302 fails naming its target host; the target is never asked."""
    fake.script(Canned(302, b"", {"Location": "https://app.datadoghq.eu/api/v1/query?x=1"}))
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError, match=r"HTTP 302 redirect to https://app\.datadoghq\.eu"):
            await prov.query(Q, budget=5)
    assert len(fake.requests) == 1


async def test_unreadable_key_file_fails_before_any_request(
    fake: DatadogFake, tmp_path: Path
) -> None:
    """A key file readable by others fails the query and nothing is sent."""
    cfg = config(fake, tmp_path)
    os.chmod(cfg.api_key_file, 0o644)
    async with opened(cfg) as prov:
        with pytest.raises(ProviderError, match="readable by others"):
            await prov.query(Q, budget=5)
    assert fake.requests == []


ERRORS = "sum:trace.http.request.errors{service:web}.as_count()"
HITS = "sum:trace.http.request.hits{service:web}.as_count()"
V2 = f"formula: 100 * a / b\na: {ERRORS}\nb: {HITS}\n"


async def test_v2_scalar_formula(fake: DatadogFake, tmp_path: Path) -> None:
    """v2 posts a scalar_request with the formula and named queries; the column is the value."""
    now = time.time()
    fake.put(ERRORS, [(now - 60, 2.0), (now - 30, 4.0)])
    fake.put(HITS, [(now - 60, 100.0), (now - 30, 100.0)])
    async with opened(config(fake, tmp_path, api="v2", aggregator="sum")) as prov:
        assert await prov.query(V2, budget=5) == 3.0
    request = fake.requests[0]
    assert (request.method, request.path) == ("POST", "/api/v2/query/scalar")
    assert request.headers["Content-Type"] == "application/json"
    attributes = request.json["data"]["attributes"]
    assert request.json["data"]["type"] == "scalar_request"
    assert attributes["formulas"] == [{"formula": "100 * a / b"}]
    assert attributes["queries"] == [
        {"name": "a", "data_source": "metrics", "query": ERRORS, "aggregator": "sum"},
        {"name": "b", "data_source": "metrics", "query": HITS, "aggregator": "sum"},
    ]
    assert attributes["to"] - attributes["from"] == 600_000


@pytest.mark.parametrize(
    ("columns", "expected"),
    [
        ([{"name": "a", "type": "number", "values": []}], None),
        ([{"name": "a", "type": "number", "values": [None]}], None),
        (
            [
                {"name": "service", "type": "group", "values": [["web"]]},
                {"name": "a", "type": "number", "values": [1.5]},
            ],
            1.5,
        ),
    ],
    ids=["empty", "null", "group-column"],
)
async def test_v2_scalar_answers(
    fake: DatadogFake, tmp_path: Path, columns: list[Any], expected: float | None
) -> None:
    """No value or null is no data; a group column beside one number is that number."""
    doc = {"data": {"type": "scalar_response", "attributes": {"columns": columns}}}
    fake.script(Canned(200, doc))
    async with opened(config(fake, tmp_path, api="v2")) as prov:
        assert await prov.query(ERRORS, budget=5) == expected


async def test_v2_scalar_several_groups_is_an_error(fake: DatadogFake, tmp_path: Path) -> None:
    """A scalar answer with one value per group fails: one number is needed."""
    now = time.time()
    fake.put(ERRORS, [(now - 10, 1.0)], [(now - 10, 2.0)])
    async with opened(config(fake, tmp_path, api="v2")) as prov:
        with pytest.raises(ProviderError, match="returned 2 series"):
            await prov.query(ERRORS, budget=5)


async def test_v2_timeseries_range(fake: DatadogFake, tmp_path: Path) -> None:
    """A v2 range posts a timeseries_request with the step as interval and returns the values."""
    now = int(time.time())
    fake.put(ERRORS, [(now - 40, 1.0), (now - 20, 2.0)])
    fake.put(HITS, [(now - 40, 10.0), (now - 20, 10.0)])
    async with opened(config(fake, tmp_path, api="v2")) as prov:
        values = await prov.query_range(V2, start=now - 60, end=now, step=20, budget=5)
    assert values == [10.0, 20.0]
    attributes = fake.requests[0].json["data"]["attributes"]
    assert fake.requests[0].path == "/api/v2/query/timeseries"
    assert (attributes["interval"], "aggregator" in attributes["queries"][0]) == (20_000, False)


async def test_v2_error_body(fake: DatadogFake, tmp_path: Path) -> None:
    """v2's {"errors": [...]} on a 400 fails at once with Datadog's text."""
    fake.bad.add(ERRORS)
    async with opened(config(fake, tmp_path, api="v2")) as prov:
        with pytest.raises(ProviderError, match="HTTP 400: Error parsing query"):
            await prov.query(ERRORS, budget=5)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (ERRORS, ("a", {"a": ERRORS})),
        (f"  {ERRORS}\n", ("a", {"a": ERRORS})),
        (f"q: {ERRORS}", ("q", {"q": ERRORS})),
        (V2, ("100 * a / b", {"a": ERRORS, "b": HITS})),
        (
            "formula: a + b\na: sum:x{\n  service:web\n}\nb: sum:y{*}",
            ("a + b", {"a": "sum:x{ service:web }", "b": "sum:y{*}"}),
        ),
    ],
    ids=["plain", "plain-padded", "one-named", "formula", "continued-lines"],
)
def test_parse_v2(text: str, expected: tuple[str, dict[str, str]]) -> None:
    """A v2 query text is a plain query or 'formula:'/'name:' lines, continued lines joined."""
    assert parse_v2(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        (f"a: {ERRORS}\nb: {HITS}", "need a 'formula:' line"),
        ("formula: a * 2", "needs named queries"),
        (f"a: {ERRORS}\na: {HITS}", "set twice"),
    ],
    ids=["empty", "no-formula", "formula-alone", "twice"],
)
def test_parse_v2_refuses(text: str, message: str) -> None:
    """Ambiguous or empty v2 query texts are refused with the reason."""
    with pytest.raises(ProviderError, match=message):
        parse_v2(text)


def test_v1_pointlist_json_shape_is_documented() -> None:
    """The fake's v1 answer has the documented keys the provider relies on."""
    fake = DatadogFake()
    fake.put_now(Q, 1.0)
    answer = fake._v1(
        {"from": [str(int(time.time()) - 60)], "to": [str(int(time.time()))], "query": [Q]}
    )
    doc = json.loads(answer.response().body)  # type: ignore[arg-type]
    assert doc["status"] == "ok" and doc["res_type"] == "time_series"
    assert doc["series"][0]["pointlist"][0][1] == 1.0
