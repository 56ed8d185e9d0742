"""The Graphite provider: query building, answer parsing, retries, auth, and a real Graphite."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from graphite import GraphiteServer
from standin import stand_in
from support import eventually

from canaryd.config import GraphiteProvider
from canaryd.errors import ProviderError
from canaryd.providers import build_provider
from canaryd.providers.base import TransientError
from canaryd.providers.graphite import Graphite, _series, last_value, render_path
from canaryd.providers.transport import Response

FLAGGER_QUERY = """target=summarize(
  asPercent(
    sumSeries(
      stats.app.{t}.ok.*
    ),
    sumSeries(
      stats.app.{t}.all.*
    )
  ),
  '1min',
  'avg'
)&from=-5min"""
"""The shape of Flagger's documented Graphite template (docs/providers.md)."""


def params(path: str) -> dict[str, list[str]]:
    """The query parameters of a request path."""
    return parse_qs(urlsplit(path).query)


# --------------------------------------------------------------------------- query building


def test_multiline_query_becomes_one_target_with_json_format() -> None:
    """A Flagger template written over several lines is one target, with format=json added."""
    got = params(render_path(FLAGGER_QUERY.format(t="web")))
    assert got["target"] == [
        "summarize( asPercent( sumSeries( stats.app.web.ok.* ), "
        "sumSeries( stats.app.web.all.* ) ), '1min', 'avg' )"
    ]
    assert got["from"] == ["-5min"] and got["format"] == ["json"]


def test_bare_expression_is_a_target_and_format_is_forced() -> None:
    """A query without name= is one target; a format the query sets is replaced by json."""
    assert params(render_path("sumSeries(a.b.*)")) == {
        "target": ["sumSeries(a.b.*)"],
        "format": ["json"],
    }
    assert params(render_path("target=a.b&format=csv"))["format"] == ["json"]


def test_range_window_replaces_from_and_until() -> None:
    """A range query's window replaces the query's own from/until."""
    got = params(render_path("target=a&from=-1h&until=now", {"from": "100", "until": "200"}))
    assert (got["from"], got["until"], got["target"]) == (["100"], ["200"], ["a"])


# --------------------------------------------------------------------------- answers


def answer(body: bytes, status: int = 200) -> Response:
    """A complete answer."""
    return Response(status, body, True)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"[]", None),
        (b'[{"target": "a", "datapoints": []}]', None),
        (b'[{"target": "a", "datapoints": [[null, 1], [null, 2]]}]', None),
        (b'[{"target": "a", "datapoints": [[1.5, 1], [2.5, 2], [null, 3]]}]', 2.5),
        (b'[{"target": "a", "datapoints": [["7", 1]]}]', 7.0),
        (b'[{"target": "a", "datapoints": [[NaN, 1], [4, 2], [NaN, 3]]}]', 4.0),
    ],
    ids=["no-series", "no-points", "all-null", "last-non-null", "string-value", "nan-is-null"],
)
def test_answer_values(body: bytes, expected: float | None) -> None:
    """The last non-null datapoint of the one series is the value; none at all is no data."""
    assert last_value(_series(answer(body))) == expected


@pytest.mark.parametrize(
    ("resp", "kind", "needle"),
    [
        (answer(b'[{"target":"a","datapoints":[[1,1]]},{"target":"b","datapoints":[]}]'),
         ProviderError, "2 series"),
        (answer(b"<html>oops</html>"), ProviderError, "other than render JSON"),
        (answer(b'[{"target": "a", "datapoints": [[true, 1]]}]'), ProviderError, "not [value"),
        (answer(b'[{"target": "a", "datapoints": [["n/a", 1]]}]'), ProviderError, "not a number"),
        (answer(b'[{"target": "a"}]'), ProviderError, "without datapoints"),
        (answer(b"Invalid parameters (unknown function: f)", 400), ProviderError, "HTTP 400"),
        (answer(b"slow down", 429), TransientError, "HTTP 429"),
        (answer(b"bad gateway", 502), TransientError, "HTTP 502"),
        (Response(200, b"[" * 10, False), ProviderError, "too large"),
    ],
    ids=["several-series", "not-json", "bool", "text", "no-datapoints", "400", "429", "502",
         "too-large"],
)  # fmt: skip
def test_answer_errors(resp: Response, kind: type[ProviderError], needle: str) -> None:
    """Several series, malformed answers and error statuses raise; 429/5xx are transient."""
    with pytest.raises(ProviderError) as caught:
        last_value(_series(resp))
    assert type(caught.value) is kind and needle in str(caught.value)


# --------------------------------------------------------------------------- HTTP behaviour

OK = b'[{"target": "a", "datapoints": [[42, 1]]}]'


def config(url: str, **extra: object) -> GraphiteProvider:
    """A provider config for a stand-in."""
    return GraphiteProvider.model_validate(
        {"type": "graphite", "address": url, "timeout": 1.0, **extra}
    )


@pytest.mark.anyio
async def test_rate_limit_is_retried_within_the_tick() -> None:
    """A 429 followed by an answer yields the value from the second request (a GET /render)."""
    async with stand_in((429, b"rate limited", 0.0), (200, OK, 0.0)) as fake:
        async with Graphite(config(fake.url)) as provider:
            assert await provider.query("target=a", budget=5) == 42
        assert [(r.method, r.path) for r in fake.requests] == [("GET", "/render")] * 2
        assert fake.requests[0].query == {"target": "a", "format": "json"}


@pytest.mark.anyio
async def test_persistent_503_gives_up_within_budget() -> None:
    """An endless 503 stops within the budget with a message naming the attempts."""
    async with stand_in((503, b"overloaded", 0.0)) as fake:
        async with Graphite(config(fake.url, timeout=0.2)) as provider:
            started = time.monotonic()
            with pytest.raises(ProviderError, match=r"gave up after \d+ attempts.*HTTP 503"):
                await provider.query("target=a", budget=1.0)
            assert time.monotonic() - started < 1.5
        assert len(fake.requests) >= 2


@pytest.mark.anyio
async def test_basic_auth_from_files_and_scrubbed_errors(tmp_path: Path) -> None:
    """Basic auth comes from the password file; an error echoing it shows *** instead."""
    secret = tmp_path / "password"
    secret.write_text("s3cret-pass\n")
    os.chmod(secret, 0o600)
    async with stand_in((401, b"denied for alice:s3cret-pass", 0.0)) as fake:
        cfg = config(fake.url, username="alice", password_file=str(secret))
        async with Graphite(cfg) as provider:
            with pytest.raises(ProviderError) as caught:
                await provider.query("target=a", budget=2)
        assert fake.requests[0].headers["Authorization"] == "Basic YWxpY2U6czNjcmV0LXBhc3M="
    assert "s3cret" not in str(caught.value) and "***" in str(caught.value)


@pytest.mark.anyio
async def test_factory_builds_graphite() -> None:
    """The factory turns a graphite config into a Graphite provider."""
    provider = build_provider(config("http://127.0.0.1:1"))
    try:
        assert isinstance(provider, Graphite)
    finally:
        await provider.aclose()


# --------------------------------------------------------------------------- real Graphite


@pytest.mark.anyio
@pytest.mark.integration
async def test_real_graphite_last_value_and_no_data(
    graphite: GraphiteServer, unique_job: str
) -> None:
    """Points written to carbon come back as their last value; an unknown metric is no data."""
    now = int(time.time())
    name = f"canaryd.{unique_job}.errors"
    graphite.send([(name, 1.0, now - 3), (name, 2.0, now - 2), (name, 3.5, now - 1)])
    async with Graphite(graphite.provider_config()) as provider:
        await eventually(
            lambda: provider.query(f"target={name}&from=-1min", budget=5), lambda v: v == 3.5
        )
        assert await provider.query(f"target=canaryd.{unique_job}.nothing", budget=5) is None


@pytest.mark.anyio
@pytest.mark.integration
async def test_real_graphite_flagger_template(graphite: GraphiteServer, unique_job: str) -> None:
    """Flagger's multi-line summarize(asPercent(sumSeries(...))) template gives the percentage."""
    now = int(time.time())
    minute = now - now % 60 - 60  # a whole past minute: summarize's bucket is exact
    ok, bad = f"stats.app.{unique_job}.ok.x", f"stats.app.{unique_job}.all.x"
    graphite.send([(ok, 90.0, minute + 5), (bad, 120.0, minute + 5)])
    async with Graphite(graphite.provider_config()) as provider:
        await eventually(
            lambda: provider.query(FLAGGER_QUERY.format(t=unique_job), budget=5),
            lambda v: v == 75.0,
        )


@pytest.mark.anyio
@pytest.mark.integration
async def test_real_graphite_errors(graphite: GraphiteServer, unique_job: str) -> None:
    """Several series and an unknown function are errors, not no data."""
    now = int(time.time())
    graphite.send([(f"canaryd.{unique_job}.a", 1.0, now), (f"canaryd.{unique_job}.b", 2.0, now)])
    async with Graphite(graphite.provider_config()) as provider:
        await eventually(
            lambda: provider.query(f"target=sumSeries(canaryd.{unique_job}.*)", budget=5),
            lambda v: v == 3.0,
        )
        with pytest.raises(ProviderError, match="2 series"):
            await provider.query(f"target=canaryd.{unique_job}.*", budget=5)
        with pytest.raises(ProviderError, match=r"HTTP 400.*unknown function"):
            await provider.query("target=noSuchFunction(a.b)", budget=5)
        assert provider.stats.retries == 0


@pytest.mark.anyio
@pytest.mark.integration
async def test_real_graphite_range(graphite: GraphiteServer, unique_job: str) -> None:
    """A range query returns the series over exactly the window, gaps as NaN."""
    t0 = int(time.time()) - 30
    name = f"canaryd.{unique_job}.latency"
    graphite.send([(name, 10.0, t0), (name, 11.0, t0 + 1), (name, 13.0, t0 + 3)])
    async with Graphite(graphite.provider_config()) as provider:
        got = await eventually(
            lambda: provider.query_range(name, start=t0, end=t0 + 3, step=1, budget=5),
            lambda v: len(v) == 4 and v[3] == 13.0,
        )
    assert got[:2] == [10.0, 11.0] and math.isnan(got[2])
