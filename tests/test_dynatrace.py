"""The Dynatrace provider against a fake of its documented metrics API v2 (fake_dynatrace.py)."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from fake_dynatrace import TOKEN, DynatraceFake, error, rate_limited
from vendorfake import Canned, opened, secret

from canaryd.config import DynatraceProvider
from canaryd.errors import ProviderError

pytestmark = pytest.mark.anyio

SEL = (
    "builtin:service.response.time"
    ":filter(eq(dt.entity.service,SERVICE-ABCDEFG0123456789)):percentile(95)"
)


@pytest.fixture
async def fake(anyio_backend: str) -> AsyncIterator[DynatraceFake]:
    """A running Dynatrace fake."""
    async with DynatraceFake() as server:
        yield server  # type: ignore[misc]


def config(fake: DynatraceFake, tmp_path: Path, **extra: Any) -> DynatraceProvider:
    """A provider config for the fake with the token in a file."""
    return DynatraceProvider.model_validate(
        {
            "type": "dynatrace",
            "address": fake.url,
            "api_token_file": secret(tmp_path, "token", TOKEN),
            "timeout": "1s",
            **extra,
        }
    )


def body(*data: dict[str, Any]) -> Canned:
    """A documented answer with these ``data`` series under one metric."""
    return Canned(200, {"totalCount": 1, "result": [{"metricId": SEL, "data": list(data)}]})


async def test_request_is_flaggers(fake: DynatraceFake, tmp_path: Path) -> None:
    """GET with metricSelector, resolution=Inf, from = to - lookback (ms) and the Api-Token."""
    now = time.time()
    fake.put(SEL, [(now - 120, 200.0), (now - 60, 400.0)])
    async with opened(config(fake, tmp_path, lookback="10m")) as prov:
        assert await prov.query(f"{SEL}\n", budget=5) == 300.0
    request = fake.requests[0]
    params = {k: v[0] for k, v in parse_qs(request.query).items()}
    assert (request.method, request.path) == ("GET", "/api/v2/metrics/query")
    assert (params["metricSelector"], params["resolution"]) == (SEL, "Inf")
    assert int(params["to"]) - int(params["from"]) == 600_000
    assert request.headers["Authorization"] == f"Api-Token {TOKEN}"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (Canned(200, {"totalCount": 0, "result": []}), None),
        (body(), None),
        (body({"timestamps": [], "values": []}), None),
        (body({"timestamps": [1, 2], "values": [None, None]}), None),
        (body({"timestamps": [1, 2], "values": [5.0, None]}), 5.0),
        (body({"timestamps": [1, 2], "values": [5.0, 7.5]}), 7.5),
    ],
    ids=["no-result", "no-data", "no-values", "all-null", "last-non-null", "latest"],
)
async def test_answers(
    fake: DynatraceFake, tmp_path: Path, answer: Canned, expected: float | None
) -> None:
    """Missing result, data or non-null values are no data; else the latest non-null value."""
    fake.script(answer)
    async with opened(config(fake, tmp_path)) as prov:
        assert await prov.query(SEL, budget=5) == expected


async def test_no_points_in_window_is_no_data(fake: DynatraceFake, tmp_path: Path) -> None:
    """A selector without points in the lookback window answers no data (None)."""
    fake.put(SEL, [(time.time() - 7200, 1.0)])
    async with opened(config(fake, tmp_path)) as prov:
        assert await prov.query(SEL, budget=5) is None


async def test_several_dimensions_is_an_error(fake: DynatraceFake, tmp_path: Path) -> None:
    """Several dimension tuples fail: a metric query must give one number."""
    now = time.time()
    fake.put(SEL, [(now - 10, 1.0)], [(now - 10, 2.0)])
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError, match=r"returned 2 series.*splitBy"):
            await prov.query(SEL, budget=5)


async def test_several_metrics_is_an_error(fake: DynatraceFake, tmp_path: Path) -> None:
    """A selector naming two metrics fails."""
    fake.script(Canned(200, {"result": [{"data": []}, {"data": []}]}))
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError, match="returned 2 series"):
            await prov.query(SEL, budget=5)


async def test_error_body_fails_without_retry(fake: DynatraceFake, tmp_path: Path) -> None:
    """Dynatrace's {"error": {...}} on a 400 fails at once with its message."""
    fake.bad.add(SEL)
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query(SEL, budget=5)
    assert str(err.value) == f"dynatrace answered HTTP 400: The metric selector is invalid: {SEL}"
    assert len(fake.requests) == 1


async def test_wrong_token_fails_without_showing_it(fake: DynatraceFake, tmp_path: Path) -> None:
    """A 401 names Dynatrace's message and never the token."""
    cfg = config(fake, tmp_path).model_copy(
        update={"api_token_file": secret(tmp_path, "bad", "dt0c01.WRONGWRONGWRONG")}
    )
    async with opened(cfg) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query(SEL, budget=5)
    assert str(err.value) == "dynatrace answered HTTP 401: Missing authorization parameter."


async def test_echoed_token_is_scrubbed(fake: DynatraceFake, tmp_path: Path) -> None:
    """A page echoing the Authorization header reaches the error with the token replaced."""
    fake.script(Canned(403, f"denied: Api-Token {TOKEN}".encode()))
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query(SEL, budget=5)
    assert "denied: Api-Token ***" in str(err.value)
    assert TOKEN not in str(err.value)


@pytest.mark.slow
async def test_rate_limit_reset_in_microseconds(fake: DynatraceFake, tmp_path: Path) -> None:
    """X-RateLimit-Reset is microseconds since the epoch: 1s ahead is waited for, then retried."""
    fake.put(SEL, [(time.time() - 5, 2.0)])
    fake.script(rate_limited(1.0))
    async with opened(config(fake, tmp_path)) as prov:
        started = time.monotonic()
        assert await prov.query(SEL, budget=5) == 2.0
        waited = time.monotonic() - started
    assert 0.8 <= waited < 4.0
    assert len(fake.requests) == 2


async def test_rate_limit_past_the_budget_fails(fake: DynatraceFake, tmp_path: Path) -> None:
    """A reset a minute ahead is past a 5s budget: one request, an error naming the wait."""
    fake.script(rate_limited(60.0))
    async with opened(config(fake, tmp_path)) as prov:
        with pytest.raises(ProviderError, match=r"resets in (59|60)\.\ds, after this check's"):
            await prov.query(SEL, budget=5)
    assert len(fake.requests) == 1


async def test_server_error_is_retried(fake: DynatraceFake, tmp_path: Path) -> None:
    """A 503 is transient: the second answer counts."""
    fake.put(SEL, [(time.time() - 5, 2.0)])
    fake.script(error(503, "Service unavailable"))
    async with opened(config(fake, tmp_path)) as prov:
        assert await prov.query(SEL, budget=5) == 2.0
    assert len(fake.requests) == 2


async def test_range_uses_minute_resolution(fake: DynatraceFake, tmp_path: Path) -> None:
    """A range asks for the step in whole minutes and returns the values, null as NaN."""
    now = int(time.time())
    fake.put(SEL, [(now - 180, 1.0), (now - 120, None), (now - 60, 3.0)])
    async with opened(config(fake, tmp_path)) as prov:
        values = await prov.query_range(SEL, start=now - 200, end=now, step=60, budget=5)
    assert [v if v == v else "nan" for v in values] == [1.0, "nan", 3.0]
    params = {k: v[0] for k, v in parse_qs(fake.requests[0].query).items()}
    assert (params["resolution"], params["from"]) == ("1m", str((now - 200) * 1000))
