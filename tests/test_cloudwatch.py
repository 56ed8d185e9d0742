"""The CloudWatch provider against moto's server mode (tests/cloudwatch_server.py)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cloudwatch_server import FAKE_CREDENTIALS, MotoServer, put_metric, start_moto
from support import refused_port
from vendorfake import opened

from canaryd.errors import ProviderError
from canaryd.providers.base import TransientError
from canaryd.providers.cloudwatch import classify, parse_query, result_values

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture(scope="module")
def moto() -> Iterator[MotoServer]:
    """One moto server for this module (each test uses its own namespace)."""
    with start_moto() as server:
        yield server


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Credentials in the environment; no shared files or instance role to fall back on."""
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)


def stat(qid: str, namespace: str, name: str, *, returned: bool = True) -> dict[str, Any]:
    """A MetricDataQuery with a MetricStat (Sum over 60s) of ``name``, app=``namespace``.

    The dimension repeats the namespace: moto matches dimensions without the namespace.
    """
    return {
        "Id": qid,
        "MetricStat": {
            "Metric": {
                "Namespace": namespace,
                "MetricName": name,
                "Dimensions": [{"Name": "app", "Value": namespace}],
            },
            "Period": 60,
            "Stat": "Sum",
        },
        "ReturnData": returned,
    }


@pytest.fixture
def ns() -> str:
    """A namespace (and app dimension) no other test uses."""
    return f"canaryd-{uuid.uuid4().hex[:8]}"


async def test_metric_stat_instant_is_the_latest_period(
    moto: MotoServer, aws_env: None, ns: str
) -> None:
    """The most recent period's statistic of the returned query is the value."""
    now = time.time()
    await put_metric(moto, ns, "Errors", {"app": ns}, [(now - 200, 9.0), (now - 20, 4.0)])
    async with opened(moto.provider_config()) as prov:
        assert await prov.query(json.dumps([stat("m1", ns, "Errors")]), budget=5) == 4.0


async def test_expression_over_hidden_queries(moto: MotoServer, aws_env: None, ns: str) -> None:
    """An Expression over a MetricStat with ReturnData false is the value (Flagger's form)."""
    now = time.time()
    await put_metric(moto, ns, "Errors", {"app": ns}, [(now - 20, 5.0)])
    query = [
        {"Id": "e1", "Expression": "m1", "Label": "ErrorCount"},
        stat("m1", ns, "Errors", returned=False),
    ]
    async with opened(moto.provider_config()) as prov:
        assert await prov.query(json.dumps(query), budget=5) == 5.0


async def test_no_datapoints_is_no_data(moto: MotoServer, aws_env: None, ns: str) -> None:
    """A metric without datapoints in the lookback window answers no data (None)."""
    await put_metric(moto, ns, "Errors", {"app": ns}, [(time.time() - 7200, 1.0)])
    async with opened(moto.provider_config(lookback="10m")) as prov:
        assert await prov.query(json.dumps([stat("m1", ns, "Errors")]), budget=5) is None


async def test_range_is_oldest_first(moto: MotoServer, aws_env: None, ns: str) -> None:
    """A range query returns the periods' values in time order."""
    now = time.time()
    start = now - 600
    points = [(start + 90, 1.0), (start + 210, 2.0), (start + 330, 3.0)]
    await put_metric(moto, ns, "Errors", {"app": ns}, points)
    async with opened(moto.provider_config()) as prov:
        query = json.dumps([stat("m1", ns, "Errors")])
        values = await prov.query_range(query, start=start, end=now, step=60, budget=5)
    assert values == [1.0, 2.0, 3.0]


async def test_several_returned_queries_is_an_error(
    moto: MotoServer, aws_env: None, ns: str
) -> None:
    """Two queries with ReturnData fail: one number is needed."""
    now = time.time()
    await put_metric(moto, ns, "Errors", {"app": ns}, [(now - 20, 1.0)])
    await put_metric(moto, ns, "Requests", {"app": ns}, [(now - 20, 1.0)])
    query = json.dumps([stat("m1", ns, "Errors"), stat("m2", ns, "Requests")])
    async with opened(moto.provider_config()) as prov:
        with pytest.raises(ProviderError, match=r"returned 2 series.*ReturnData"):
            await prov.query(query, budget=5)


async def test_invalid_query_is_refused_by_cloudwatch(moto: MotoServer, aws_env: None) -> None:
    """A query CloudWatch rejects (no MetricStat nor Expression) fails at once with its message."""
    async with opened(moto.provider_config()) as prov:
        started = time.monotonic()
        with pytest.raises(ProviderError, match=r"ValidationError \(HTTP 400\)"):
            await prov.query('[{"Id": "m1"}]', budget=5)
    assert time.monotonic() - started < 2.0


@pytest.mark.parametrize(
    ("text", "message"),
    [("not json", "not JSON"), ("{}", "JSON list"), ('[{"MetricStat": {}}]', "with an Id")],
    ids=["not-json", "object", "no-id"],
)
def test_query_text_must_be_metric_data_queries(text: str, message: str) -> None:
    """The query text is a JSON list of MetricDataQuery objects with an Id, or refused."""
    with pytest.raises(ProviderError, match=message):
        parse_query(text)


async def test_shared_credentials_file_profile(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ns: str
) -> None:
    """Without environment keys, the profile's keys in the shared credentials file are used."""
    creds = tmp_path / "credentials"
    creds.write_text(
        "[canary]\naws_access_key_id = AKIAI44QH8DHBEXAMPLE\n"
        "aws_secret_access_key = je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY\n"
    )
    for name in (*FAKE_CREDENTIALS, "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    async with opened(moto.provider_config(profile="canary")) as prov:
        assert await prov.query(json.dumps([stat("m1", ns, "Errors")]), budget=5) is None


async def test_no_credentials_is_a_clear_error(
    moto: MotoServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With no link of the chain holding credentials the query fails naming the chain."""
    for name in (*FAKE_CREDENTIALS, "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    async with opened(moto.provider_config()) as prov:
        with pytest.raises(ProviderError, match="no AWS credentials found"):
            await prov.query('[{"Id": "m1", "Expression": "m1"}]', budget=5)


async def test_unreachable_endpoint_retries_within_budget(aws_env: None) -> None:
    """Connection refused is retried until the budget ends, then reported."""
    from canaryd.config import CloudWatchProvider

    cfg = CloudWatchProvider.model_validate(
        {
            "type": "cloudwatch",
            "region": "us-east-1",
            "endpoint_url": f"http://127.0.0.1:{refused_port()}",
            "timeout": "0.5s",
        }
    )
    async with opened(cfg) as prov:
        started = time.monotonic()
        with pytest.raises(ProviderError, match=r"gave up after \d+ attempts.*cannot reach"):
            await prov.query('[{"Id": "m1", "Expression": "m1"}]', budget=1.5)
    assert time.monotonic() - started < 1.5 + 2.0  # the budget, and a loaded machine's slack


@pytest.mark.parametrize(
    ("code", "status", "transient"),
    [
        ("Throttling", 400, True),
        ("InternalServiceError", 500, True),
        ("AccessDenied", 403, False),
        ("InvalidParameterValue", 400, False),
    ],
)
def test_client_errors_are_classified(code: str, status: int, transient: bool) -> None:
    """Throttling and 5xx are worth another attempt; access and parameter errors are not."""
    exc = ClientError(
        {
            "Error": {"Code": code, "Message": "m"},
            "ResponseMetadata": {
                "RequestId": "r",
                "HostId": "h",
                "HTTPStatusCode": status,
                "HTTPHeaders": {},
                "RetryAttempts": 0,
            },
        },
        "GetMetricData",
    )
    error = classify(exc)
    assert isinstance(error, TransientError) is transient
    assert str(error) == f"cloudwatch {code} (HTTP {status}): m"


@pytest.mark.parametrize(
    ("result", "kind"),
    [
        ({"Id": "m1", "StatusCode": "InternalError", "Values": []}, TransientError),
        ({"Id": "m1", "StatusCode": "Forbidden", "Values": []}, ProviderError),
    ],
    ids=["internal-error", "forbidden"],
)
def test_result_status_codes(result: dict[str, Any], kind: type[ProviderError]) -> None:
    """A result's InternalError status is transient; Forbidden fails for good."""
    with pytest.raises(kind) as err:
        result_values({"MetricDataResults": [result]})
    assert isinstance(err.value, TransientError) is (kind is TransientError)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"region": "eu west"}, "must be an AWS region name"),
        ({"region": "eu-west-1", "lookback": "0s"}, "must be at least 1s"),
        ({"region": "eu-west-1", "endpoint_url": "monitoring.local"}, "http:// or https://"),
    ],
    ids=["region", "lookback", "endpoint"],
)
def test_config_is_validated(extra: dict[str, str], message: str) -> None:
    """A malformed region, a lookback under a second or a non-URL endpoint is refused."""
    from canaryd.config import CloudWatchProvider

    with pytest.raises(ValueError, match=message):
        CloudWatchProvider.model_validate({"type": "cloudwatch", **extra})


async def test_unknown_profile_is_an_error(moto: MotoServer, aws_env: None) -> None:
    """A profile the shared files do not have fails the query with botocore's reason."""
    async with opened(moto.provider_config(profile="nope")) as prov:
        with pytest.raises(ProviderError, match=r"ProfileNotFound.*nope"):
            await prov.query('[{"Id": "m1", "Expression": "m1"}]', budget=5)
