"""The InfluxDB provider: InfluxQL against a real InfluxDB 1.x, Flux against documented answers."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from influx import InfluxServer
from standin import stand_in
from support import eventually

from canaryd.config import InfluxDBProvider
from canaryd.errors import ProviderError
from canaryd.providers import build_provider
from canaryd.providers.base import TransientError
from canaryd.providers.influxdb import InfluxDB, flux_rows, influxql_rows, last_value
from canaryd.providers.transport import Response


def answer(body: bytes | str, status: int = 200) -> Response:
    """A complete answer."""
    return Response(status, body.encode() if isinstance(body, str) else body, True)


def secret(tmp_path: Path, name: str, value: str) -> str:
    """A secret file (mode 600)."""
    path = tmp_path / name
    path.write_text(value + "\n")
    os.chmod(path, 0o600)
    return str(path)


# --------------------------------------------------------------------------- InfluxQL answers


def series(columns: list[str], values: list[list[object]], **extra: object) -> dict[str, object]:
    """One InfluxQL series."""
    return {"name": "req", "columns": columns, "values": values, **extra}


def influxql(*statements: dict[str, object]) -> Response:
    """An InfluxQL answer holding these statement results."""
    return answer(json.dumps({"results": list(statements)}))


@pytest.mark.parametrize(
    ("resp", "expected"),
    [
        (influxql({"statement_id": 0}), None),
        (influxql({"statement_id": 0, "series": [series(["time", "mean"], [])]}), None),
        (influxql({"statement_id": 0, "series": [series(["time", "mean"], [[1, None]])]}), None),
        (influxql({"series": [series(["time", "v"], [[1, 2], [2, 3.5]])]}), 3.5),
        (influxql({"statement_id": 0, "series": [series(["time", "v"], [[1, 4], [2, None]])]}), 4),
    ],
    ids=["no-series", "no-rows", "null", "last-row", "last-non-null"],
)
def test_influxql_values(resp: Response, expected: float | None) -> None:
    """The last non-null value of the one series; no series, rows or values is no data."""
    assert last_value(influxql_rows(resp)) == expected


@pytest.mark.parametrize(
    ("resp", "kind", "needle"),
    [
        (influxql({"series": [series(["time", "v"], [[1, 1]], tags={"h": "a"}),
                              series(["time", "v"], [[1, 2]], tags={"h": "b"})]}),
         ProviderError, "2 series"),
        (influxql({"statement_id": 0, "series": [series(["time", "v", "w"], [[1, 1, 2]])]}),
         ProviderError, "2 value columns"),
        (influxql({"statement_id": 0}, {"statement_id": 1}), ProviderError, "2 statements"),
        (influxql({"statement_id": 0, "error": "database not found: x"}),
         ProviderError, "database not found"),
        (influxql({"statement_id": 0, "series": [series(["time", "v"], [[1, "up"]])]}),
         ProviderError, "not a number"),
        (answer('{"error":"error parsing query: found SELEC"}', 400), ProviderError, "parsing"),
        (answer('{"error":"authorization failed"}', 401), ProviderError, "HTTP 401"),
        (answer('{"error":"too many requests"}', 429), TransientError, "HTTP 429"),
        (answer("<html>bad gateway</html>", 502), TransientError, "HTTP 502"),
        (answer("<html>ok?</html>"), ProviderError, "other than query JSON"),
    ],
    ids=["group-by", "two-columns", "two-statements", "statement-error", "string", "400",
         "401", "429", "502-html", "not-json"],
)  # fmt: skip
def test_influxql_errors(resp: Response, kind: type[ProviderError], needle: str) -> None:
    """Ambiguous or failed answers raise; 429 and 5xx are transient, the rest are not."""
    with pytest.raises(ProviderError) as caught:
        influxql_rows(resp)
    assert type(caught.value) is kind and needle in str(caught.value)


# --------------------------------------------------------------------------- Flux answers

FLUX_HEAD = (
    "#datatype,string,long,dateTime:RFC3339,dateTime:RFC3339,dateTime:RFC3339,{kind},string,"
    "string,string\r\n"
    "#group,false,false,true,true,false,false,true,true,true\r\n"
    "#default,_result,,,,,,,,\r\n"
    ",result,table,_start,_stop,_time,_value,_field,_measurement,host\r\n"
)
"""The head of an annotated CSV table as InfluxDB 2.x documents it (/api/v2/query)."""


def flux_table(values: list[str], table: int = 0, kind: str = "double") -> str:
    """One annotated CSV table of ``values`` (the documented shape), blank line after."""
    rows = "".join(
        f",,{table},2021-01-01T00:00:00Z,2021-01-01T01:00:00Z,2021-01-01T00:0{i}:00Z,{v},"
        "usage,cpu,a\r\n"
        for i, v in enumerate(values)
    )
    return FLUX_HEAD.format(kind=kind) + rows + "\r\n"


FLUX_ERROR = (
    "#datatype,string,string\r\n#group,true,true\r\n#default,,\r\n,error,reference\r\n"
    ",failed to create physical plan: invalid time bounds from procedure from,897\r\n"
)
"""An error reported inside a 200 answer, as InfluxDB documents it."""


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("\r\n", None),
        (flux_table([]), None),
        (flux_table(["12.5"]), 12.5),
        (flux_table(["1", "2", ""]), 2.0),
        (flux_table(["NaN"]), None),
        (flux_table(["42"], kind="long"), 42.0),
    ],
    ids=["empty", "no-rows", "one-row", "last-non-null", "nan", "long"],
)
def test_flux_values(body: str, expected: float | None) -> None:
    """The last non-null _value of the one table; an empty answer is no data."""
    assert last_value(flux_rows(answer(body))) == expected


@pytest.mark.parametrize(
    ("resp", "kind", "needle"),
    [
        (answer(flux_table(["1"]) + flux_table(["2"], table=1)), ProviderError, "2 tables"),
        (answer(FLUX_ERROR), ProviderError, "invalid time bounds"),
        (answer(flux_table(["up"], kind="string")), ProviderError, "type string"),
        (answer('{"code":"invalid","message":"compilation failed: undefined identifier frm"}',
                400), ProviderError, "compilation failed"),
        (answer('{"code":"unauthorized","message":"unauthorized access"}', 401),
         ProviderError, "unauthorized access"),
        (answer('{"code":"too many requests","message":"org over quota"}', 429),
         TransientError, "over quota"),
        (answer('{"code":"unavailable","message":"service unavailable"}', 503),
         TransientError, "HTTP 503"),
        (answer(",result,table,_time,count\r\n,,0,2021-01-01T00:00:00Z,4\r\n"),
         ProviderError, "without a _value column"),
    ],
    ids=["two-tables", "error-table", "string", "400", "401", "429", "503", "no-value"],
)  # fmt: skip
def test_flux_errors(resp: Response, kind: type[ProviderError], needle: str) -> None:
    """Flux errors, several tables and non-numbers raise; 429 and 5xx are transient."""
    with pytest.raises(ProviderError) as caught:
        flux_rows(resp)
    assert type(caught.value) is kind and needle in str(caught.value)


# --------------------------------------------------------------------------- requests


@pytest.mark.anyio
async def test_flux_request_against_the_documented_api(tmp_path: Path) -> None:
    """Flux goes to /api/v2/query?org= as JSON with a Token header; a range defines v first."""
    token = secret(tmp_path, "token", "tok-123456")
    org = secret(tmp_path, "org", "my-org")
    async with stand_in((200, flux_table(["7.5"]).encode(), 0.0), content_type="text/csv") as fake:
        cfg = InfluxDBProvider.model_validate(
            {"type": "influxdb", "address": fake.url, "language": "flux",
             "token_file": token, "org_file": org}
        )  # fmt: skip
        async with InfluxDB(cfg) as provider:
            assert await provider.query('from(bucket: "b") |> last()', budget=2) == 7.5
            got = await provider.query_range("q", start=0, end=60, step=10, budget=2)
    first, second = fake.requests
    assert (first.method, first.path, first.query) == ("POST", "/api/v2/query", {"org": "my-org"})
    assert first.headers["Authorization"] == "Token tok-123456"
    assert first.headers["Content-Type"] == "application/json"
    body = json.loads(first.body)
    assert body["query"] == 'from(bucket: "b") |> last()' and body["type"] == "flux"
    assert body["dialect"]["annotations"] == ["datatype", "group", "default"]
    assert json.loads(second.body)["query"] == (
        "option v = {timeRangeStart: 1970-01-01T00:00:00.000Z, "
        "timeRangeStop: 1970-01-01T00:01:00.000Z, windowPeriod: 10s}\nq"
    )
    assert got == [7.5]


@pytest.mark.anyio
async def test_influxql_request_form(tmp_path: Path) -> None:
    """InfluxQL is a POST /query form with q, db, rp and epoch; a range adds bind parameters."""
    ok = json.dumps({"results": [{"statement_id": 0}]}).encode()
    async with stand_in((200, ok, 0.0)) as fake:
        cfg = InfluxDBProvider.model_validate(
            {"type": "influxdb", "address": fake.url, "database": "db1", "retentionPolicy": "rp1"}
        )
        async with InfluxDB(cfg) as provider:
            assert await provider.query("SELECT last(v) FROM m", budget=2) is None
            assert (
                await provider.query_range("SELECT v FROM m", start=0, end=1, step=1, budget=2)
                == []
            )
    instant, ranged = (parse_qs(r.body.decode()) for r in fake.requests)
    assert instant == {"q": ["SELECT last(v) FROM m"], "db": ["db1"], "rp": ["rp1"], "epoch": ["s"]}
    assert json.loads(ranged["params"][0]) == {
        "timeRangeStart": "1970-01-01T00:00:00.000Z",
        "timeRangeStop": "1970-01-01T00:00:01.000Z",
    }
    assert fake.requests[0].path == "/query"


@pytest.mark.anyio
async def test_rate_limit_retried_and_token_scrubbed(tmp_path: Path) -> None:
    """A 429 is retried; a 401 echoing the token shows *** and is not retried."""
    token = secret(tmp_path, "token", "very-secret-token")
    replies = [
        (429, b'{"error":"slow down"}', 0.0),
        (200, influxql({"series": [series(["time", "v"], [[1, 5]])]}).body, 0.0),
        (401, b'{"error":"bad token very-secret-token"}', 0.0),
    ]  # fmt: skip
    async with stand_in(*replies) as fake:
        cfg = InfluxDBProvider.model_validate(
            {"type": "influxdb", "address": fake.url, "token_file": token, "timeout": 1}
        )
        async with InfluxDB(cfg) as provider:
            assert await provider.query("SELECT v FROM m", budget=5) == 5
            with pytest.raises(ProviderError) as caught:
                await provider.query("SELECT v FROM m", budget=5)
        assert len(fake.requests) == 3
    assert "very-secret" not in str(caught.value) and "***" in str(caught.value)


@pytest.mark.anyio
async def test_factory_builds_influxdb() -> None:
    """The factory turns an influxdb config into an InfluxDB provider."""
    cfg = InfluxDBProvider.model_validate({"type": "influxdb", "address": "http://127.0.0.1:1"})
    provider = build_provider(cfg)
    try:
        assert isinstance(provider, InfluxDB)
    finally:
        await provider.aclose()


# --------------------------------------------------------------------------- real InfluxDB 1.x


@pytest.mark.anyio
@pytest.mark.integration
async def test_real_influxdb_values_and_no_data(influxdb: InfluxServer, unique_job: str) -> None:
    """Points written with /write come back through canaryd; an empty measurement is no data."""
    m = unique_job.replace("-", "_")
    now = int(time.time())
    influxdb.write(
        [f"{m},host=a v=1 {now - 3}", f"{m},host=b v=2 {now - 2}", f"{m},host=a v=4 {now - 1}"]
    )
    async with InfluxDB(influxdb.provider_config()) as provider:
        assert await provider.query(f"SELECT last(v) FROM {m}", budget=5) == 4
        assert await provider.query(f"SELECT sum(v) FROM {m}", budget=5) == 7
        assert await provider.query(f"SELECT mean(v) FROM {m}_none", budget=5) is None
        assert await provider.query(f"SELECT mean(v) FROM {m} WHERE host = 'zz'", budget=5) is None


@pytest.mark.anyio
@pytest.mark.integration
async def test_real_influxdb_errors(influxdb: InfluxServer, unique_job: str) -> None:
    """GROUP BY a tag, a syntax error, an unknown database and a wrong password all raise."""
    m = unique_job.replace("-", "_")
    now = int(time.time())
    influxdb.write([f"{m},host=a v=1 {now}", f"{m},host=b v=2 {now}"])
    async with InfluxDB(influxdb.provider_config()) as provider:
        with pytest.raises(ProviderError, match="2 series"):
            await provider.query(f"SELECT last(v) FROM {m} GROUP BY host", budget=5)
        with pytest.raises(ProviderError, match="error parsing query"):
            await provider.query("SELEC v FROM x", budget=5)
        assert provider.stats.retries == 0
    async with InfluxDB(influxdb.provider_config(database="nope")) as provider:
        with pytest.raises(ProviderError, match="database not found: nope"):
            await provider.query(f"SELECT last(v) FROM {m}", budget=5)
    wrong = influxdb.workdir / "wrong"
    wrong.write_text("not-the-password")
    os.chmod(wrong, 0o600)
    async with InfluxDB(influxdb.provider_config(password_file=str(wrong))) as provider:
        with pytest.raises(ProviderError, match="HTTP 401") as caught:
            await provider.query(f"SELECT last(v) FROM {m}", budget=5)
    assert "not-the-password" not in str(caught.value)


@pytest.mark.anyio
@pytest.mark.integration
async def test_real_influxdb_range(influxdb: InfluxServer, unique_job: str) -> None:
    """A range query binds the window to $timeRangeStart/$timeRangeStop; empty buckets are NaN."""
    m = unique_job.replace("-", "_")
    t0 = (int(time.time()) - 60) // 10 * 10  # buckets of GROUP BY time(10s) start at t0
    influxdb.write(
        [f"{m} v=10 {t0}", f"{m} v=11 {t0 + 10}", f"{m} v=13 {t0 + 30}", f"{m} v=99 {t0 + 50}"]
    )
    query = (
        f"SELECT mean(v) FROM {m} WHERE time >= $timeRangeStart AND time <= $timeRangeStop "
        "GROUP BY time(10s) fill(null)"
    )
    async with InfluxDB(influxdb.provider_config()) as provider:
        got = await eventually(
            lambda: provider.query_range(query, start=t0, end=t0 + 39, step=10, budget=5),
            lambda v: len(v) == 4,
        )
    assert got[:2] == [10.0, 11.0] and math.isnan(got[2]) and got[3] == 13.0
