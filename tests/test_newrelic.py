"""The New Relic provider against a fake of NerdGraph's documented API (tests/fake_newrelic.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from fake_newrelic import ACCOUNT, API_KEY, NewRelicFake, graphql_error, results
from vendorfake import Canned, opened, secret

from canaryd.config import NewRelicProvider
from canaryd.errors import ProviderError
from canaryd.providers.newrelic import GRAPHQL, row_value

pytestmark = pytest.mark.anyio

Q = "SELECT percentage(count(*), WHERE error IS true) FROM Transaction WHERE appName = 'web'"


@pytest.fixture
async def fake(anyio_backend: str) -> AsyncIterator[NewRelicFake]:
    """A running NerdGraph fake."""
    async with NewRelicFake() as server:
        yield server  # type: ignore[misc]


def config(fake: NewRelicFake, tmp_path: Path, **extra: Any) -> NewRelicProvider:
    """A provider config for the fake: user key in a file, account id inline."""
    return NewRelicProvider.model_validate(
        {
            "type": "newrelic",
            "address": fake.url,
            "api_key_file": secret(tmp_path, "key", API_KEY),
            "account_id": ACCOUNT,
            "timeout": "1s",
            **extra,
        }
    )


async def test_request_is_graphql_with_variables_and_since(
    fake: NewRelicFake, tmp_path: Path
) -> None:
    """The NRQL goes as a GraphQL variable with SINCE <lookback> appended, the key in API-Key."""
    fake.put_now(Q, 1.5)
    async with opened(config(fake, tmp_path, lookback="2m")) as prov:
        assert await prov.query(f"{Q}\n", budget=5) == 1.5
    request = fake.requests[0]
    assert (request.method, request.path) == ("POST", "/graphql")
    assert request.headers["API-Key"] == API_KEY
    assert request.json == {
        "query": GRAPHQL,
        "variables": {"account": ACCOUNT, "nrql": f"{Q} SINCE 120 seconds ago", "timeout": 1},
    }


async def test_own_since_is_kept(fake: NewRelicFake, tmp_path: Path) -> None:
    """A query with its own SINCE clause is sent unchanged."""
    fake.put_now(Q, 2.0)
    async with opened(config(fake, tmp_path)) as prov:
        assert await prov.query(f"{Q} since 300 seconds ago", budget=5) == 2.0
    assert fake.requests[0].json["variables"]["nrql"] == f"{Q} since 300 seconds ago"


async def test_account_id_from_a_file(fake: NewRelicFake, tmp_path: Path) -> None:
    """account_id_file (Flagger's newrelic_account_id) supplies the account variable."""
    fake.put_now(Q, 2.0)
    cfg = config(fake, tmp_path).model_copy(
        update={"account_id": None, "account_id_file": secret(tmp_path, "id", str(ACCOUNT))}
    )
    async with opened(cfg) as prov:
        assert await prov.query(Q, budget=5) == 2.0


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([], None),
        ([{"result": None}], None),
        ([{"average.duration": 0.25}], 0.25),
        ([{"count": 0}], 0.0),
        ([{"percentile.duration": {"95": 1.5}}], 1.5),
        ([{"beginTimeSeconds": 1, "endTimeSeconds": 2, "latest.x": 4}], 4.0),
    ],
    ids=["no-rows", "null", "function-column", "zero-count", "percentile", "time-columns"],
)
async def test_answers(
    fake: NewRelicFake, tmp_path: Path, rows: list[dict[str, Any]], expected: float | None
) -> None:
    """No row or a null value is no data; one row's single value column is the value."""
    fake.script(results(rows))
    async with opened(config(fake, tmp_path)) as prov:
        assert await prov.query(Q, budget=5) == expected


async def test_facets_are_an_error(fake: NewRelicFake, tmp_path: Path) -> None:
    """Several result rows (FACET) fail: a metric query must give one number."""
    fake.script(results([{"facet": "a", "count": 1}, {"facet": "b", "count": 2}]))
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError, match="returned 2 series"):
            await prov.query(Q, budget=5)


def test_several_value_columns_is_an_error() -> None:
    """A row with two value columns is refused, naming them."""
    with pytest.raises(ProviderError, match=r"2 columns \(a, b\); select exactly one value"):
        row_value({"a": 1, "b": 2})


async def test_syntax_error_fails_without_retry(fake: NewRelicFake, tmp_path: Path) -> None:
    """A GraphQL error of class INVALID_INPUT fails at once with its message."""
    fake.script(graphql_error("NRQL Syntax Error: bad", "INVALID_INPUT"))
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError, match=r"^newrelic error: NRQL Syntax Error: bad$"):
            await prov.query(Q, budget=5)
    assert len(fake.requests) == 1


async def test_timeout_error_class_is_retried(fake: NewRelicFake, tmp_path: Path) -> None:
    """A NerdGraph TIMEOUT error and an HTTP 503 are transient: the third answer counts."""
    fake.put_now(Q, 6.0)
    fake.script(graphql_error("NRDB query timed out", "TIMEOUT"), Canned(503, b"unavailable"))
    async with opened(config(fake, tmp_path)) as prov:
        assert await prov.query(Q, budget=5) == 6.0
    assert len(fake.requests) == 3


@pytest.mark.slow
async def test_rate_limit_retry_after(fake: NewRelicFake, tmp_path: Path) -> None:
    """A 429 with Retry-After 1 is retried after a second, within the budget."""
    fake.put_now(Q, 6.0)
    fake.script(Canned(429, {"errors": [{"message": "Too many requests"}]}, {"Retry-After": "1"}))
    async with opened(config(fake, tmp_path)) as prov:
        started = time.monotonic()
        assert await prov.query(Q, budget=5) == 6.0
    assert time.monotonic() - started >= 1.0
    assert len(fake.requests) == 2


async def test_wrong_key_fails_without_showing_it(fake: NewRelicFake, tmp_path: Path) -> None:
    """A wrong key is a 401 error naming New Relic's message, never the key."""
    cfg = config(fake, tmp_path).model_copy(
        update={"api_key_file": secret(tmp_path, "bad", "NRAK-WRONGWRONGWRONG")}
    )
    async with opened(cfg) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query(Q, budget=5)
    assert str(err.value) == "newrelic error: Invalid API key"
    assert "WRONG" not in str(err.value)


async def test_echoed_key_is_scrubbed(fake: NewRelicFake, tmp_path: Path) -> None:
    """A gateway page echoing the key reaches the error with the key replaced."""
    fake.script(Canned(400, f"bad header API-Key: {API_KEY}".encode()))
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query(Q, budget=5)
    assert "bad header API-Key: ***" in str(err.value)
    assert API_KEY not in str(err.value)


async def test_range_is_a_timeseries(fake: NewRelicFake, tmp_path: Path) -> None:
    """A range query appends SINCE/UNTIL in ms and TIMESERIES step; rows' values in order."""
    now = int(time.time())
    fake.put(Q, [(now - 50, 1.0), (now - 30, None), (now - 10, 3.0)])
    async with opened(config(fake, tmp_path)) as prov:
        values = await prov.query_range(Q, start=now - 60, end=now, step=20, budget=5)
    assert [v if v == v else "nan" for v in values] == [1.0, "nan", 3.0]
    nrql = fake.requests[0].json["variables"]["nrql"]
    assert nrql == f"{Q} SINCE {(now - 60) * 1000} UNTIL {now * 1000} TIMESERIES 20 seconds"


async def test_range_refuses_own_since(fake: NewRelicFake, tmp_path: Path) -> None:
    """A compared query must leave the window to canaryd: SINCE is refused before sending."""
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError, match="must not set SINCE"):
            await prov.query_range(f"{Q} SINCE 1 hour ago", start=0, end=1, step=1, budget=5)
    assert fake.requests == []


def test_account_is_required() -> None:
    """Exactly one of account_id and account_id_file must be set."""
    with pytest.raises(ValueError, match="exactly one of account_id or account_id_file"):
        NewRelicProvider.model_validate({"type": "newrelic", "api_key_file": "/k"})
