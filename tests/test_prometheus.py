"""The Prometheus provider, against a real Prometheus and a scripted stand-in."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web
from fdlimits import out_of_file_descriptors
from prom import PrometheusServer, open_provider, seed_openmetrics
from structlog.testing import capture_logs
from support import eventually, refused_port
from support.tls import self_signed

from canaryd.config import PrometheusProvider
from canaryd.errors import ProviderError, ResourceError
from canaryd.providers import build_provider
from canaryd.providers.prometheus import MAX_BODY_BYTES, Prometheus, _form_body

SEVERAL = "a metric query must return exactly one (aggregate with sum() or similar)"

# --------------------------------------------------------------------------- real Prometheus


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("42", 42.0),
        ("1e308 * 1.5 / 1.5", 1e308),
        ("1/0", math.inf),
        ("-1/0", -math.inf),
        ("scalar(vector(3.25))", 3.25),
    ],
    ids=["scalar", "huge", "plus-inf", "minus-inf", "scalar-function"],
)
async def test_scalar_answers_are_values(
    prometheus: PrometheusServer, query: str, expected: float
) -> None:
    """A scalar answer, Inf and huge numbers included, is returned as a float."""
    async with open_provider(prometheus.provider_config()) as prov:
        assert await prov.query(query, budget=5) == expected


@pytest.mark.integration
@pytest.mark.anyio
async def test_single_series_vector_is_its_value(
    prometheus: PrometheusServer, unique_job: str
) -> None:
    """A vector with one series answers that series' value once it has been scraped."""
    assert prometheus.app is not None
    prometheus.app.set("canaryd_test_value", {"job": unique_job}, 7.25)
    async with open_provider(prometheus.provider_config()) as prov:
        q = f'canaryd_test_value{{job="{unique_job}"}}'
        assert await eventually(lambda: prov.query(q, budget=2), lambda v: v is not None) == 7.25


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    "query",
    ['canaryd_never_exported{job="nobody"}', "0/0", "vector(0) / 0"],
    ids=["empty-vector", "nan-scalar", "nan-vector"],
)
async def test_no_data_is_none(prometheus: PrometheusServer, query: str) -> None:
    """An empty vector or a NaN value means "no data": None, not an error."""
    async with open_provider(prometheus.provider_config()) as prov:
        assert await prov.query(query, budget=5) is None


@pytest.mark.integration
@pytest.mark.anyio
async def test_scraped_nan_sample_is_none(prometheus: PrometheusServer, unique_job: str) -> None:
    """A series whose scraped value is NaN counts as no data."""
    assert prometheus.app is not None
    prometheus.app.set("canaryd_test_nan", {"job": unique_job}, math.nan)
    async with open_provider(prometheus.provider_config()) as prov:
        q = f'canaryd_test_nan{{job="{unique_job}"}}'
        await eventually(lambda: prov.query(f"count({q})", budget=2), lambda v: v == 1)
        assert await prov.query(q, budget=5) is None


@pytest.mark.integration
@pytest.mark.anyio
async def test_several_series_is_an_error(prometheus: PrometheusServer, unique_job: str) -> None:
    """A query answering three series fails with a message saying how many and what to do."""
    assert prometheus.app is not None
    prometheus.app.set_many(
        ("canaryd_test_multi", {"job": unique_job, "path": p}, 1.0) for p in ("/a", "/b", "/c")
    )
    async with open_provider(prometheus.provider_config()) as prov:
        q = f'canaryd_test_multi{{job="{unique_job}"}}'
        await eventually(lambda: prov.query(f"count({q})", budget=2), lambda v: v == 3)
        with pytest.raises(ProviderError) as err:
            await prov.query(q, budget=5)
    assert str(err.value) == f"query returned 3 series; {SEVERAL}"


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "message"),
    [
        (
            "sum(rate(x[1m])",
            'prometheus bad_data: invalid parameter "query": 1:16: parse error: '
            "unclosed left parenthesis",
        ),
        (
            "up[1m]",
            "query returned a range vector; a metric query must return a scalar or an instant "
            "vector (wrap the [range] selector in a function such as rate())",
        ),
        ('"text"', "query returned a string; a metric query must return a number"),
    ],
    ids=["bad-promql", "range-vector", "string"],
)
async def test_unusable_query_is_an_error_without_retry(
    prometheus: PrometheusServer, query: str, message: str
) -> None:
    """Bad PromQL carries Prometheus's own text; wrong result types say what is expected."""
    async with open_provider(prometheus.provider_config()) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query(query, budget=5)
        assert prov.stats.attempts == 1
    assert str(err.value) == message


@pytest.mark.integration
@pytest.mark.anyio
async def test_query_range_returns_one_series_values(
    prometheus: PrometheusServer, unique_job: str
) -> None:
    """A range query over one series returns one value per step, in time order."""
    assert prometheus.app is not None
    prometheus.app.set("canaryd_test_range", {"job": unique_job}, 2.5)
    q = f'canaryd_test_range{{job="{unique_job}"}}'
    async with open_provider(prometheus.provider_config()) as prov:
        await eventually(lambda: prov.query(q, budget=2), lambda v: v is not None)
        now = time.time()
        values = await prov.query_range(q, start=now, end=now + 2, step=1, budget=5)
    assert values == [2.5, 2.5, 2.5]


@pytest.mark.integration
@pytest.mark.anyio
@pytest.mark.parametrize(
    ("query", "check"),
    [
        ('canaryd_never_exported{job="nobody"}', lambda v: v == []),
        ("0/0", lambda v: len(v) == 3 and all(math.isnan(x) for x in v)),
    ],
    ids=["no-series-is-empty", "nan-is-kept"],
)
async def test_query_range_edge_cases(
    prometheus: PrometheusServer, query: str, check: Callable[[list[float]], bool]
) -> None:
    """No series gives an empty list; NaN values are kept as float('nan')."""
    now = time.time()
    async with open_provider(prometheus.provider_config()) as prov:
        assert check(await prov.query_range(query, start=now - 2, end=now, step=1, budget=5))


@pytest.mark.integration
@pytest.mark.anyio
async def test_query_range_several_series_is_an_error(prometheus: PrometheusServer) -> None:
    """A range query answering two series fails with how many came back."""
    q = 'label_replace(vector(1), "s", "a", "", "") or label_replace(vector(2), "s", "b", "", "")'
    now = time.time()
    async with open_provider(prometheus.provider_config()) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query_range(q, start=now - 2, end=now, step=1, budget=5)
    assert str(err.value) == f"range query returned 2 series; {SEVERAL}"


@pytest.mark.integration
@pytest.mark.anyio
async def test_seeded_history_is_served_exactly(tmp_path: Path) -> None:
    """OpenMetrics history written with promtool comes back value for value."""
    from prom import start_prometheus

    t0 = 1_700_000_000
    values = [1.0, 2.5, 4.0, 8.0, 16.0]
    text = "# TYPE canaryd_seeded gauge\n" + "".join(
        f'canaryd_seeded{{job="seeded"}} {v} {t0 + 10 * i}\n' for i, v in enumerate(values)
    )
    data = seed_openmetrics(text, tmp_path / "data")
    server = start_prometheus(tmp_path, data_dir=data)
    try:
        async with open_provider(server.provider_config()) as prov:
            got = await prov.query_range(
                'canaryd_seeded{job="seeded"}', start=t0, end=t0 + 40, step=10, budget=5
            )
    finally:
        server.stop()
    assert got == values


# --------------------------------------------------------------------------- scripted stand-in

Reply = tuple[int, bytes, float]
"""What the stand-in answers to one request: status, body, seconds to wait first."""

OK_42 = b'{"status":"success","data":{"resultType":"scalar","result":[1700000000,"42"]}}'


@dataclass
class StandIn:
    """A local aiohttp server playing Prometheus: answers from a script, records requests."""

    url: str = ""
    script: list[Reply] = field(default_factory=list)
    requests: list[tuple[dict[str, str], dict[str, str]]] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """Answer with the next scripted reply (the last one repeats)."""
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.requests.append((dict(request.headers), form))
        status, body, delay = self.script[min(len(self.requests), len(self.script)) - 1]
        if delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.release.wait(), delay)
        return web.Response(status=status, body=body, content_type="application/json")

    def config(self, **overrides: object) -> PrometheusProvider:
        """A provider config for this stand-in (short timeout unless overridden)."""
        return PrometheusProvider.model_validate(
            {"type": "prometheus", "address": self.url, "timeout": 1.0, **overrides}
        )


@pytest.fixture
async def stand_in(anyio_backend: str) -> AsyncIterator[StandIn]:
    """A scripted Prometheus stand-in on 127.0.0.1 (free port)."""
    fake = StandIn()
    app = web.Application()
    app.router.add_post("/api/v1/query", fake.handle)
    app.router.add_post("/api/v1/query_range", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    fake.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        fake.release.set()
        await runner.cleanup()


def prom_error(kind: str, message: str) -> bytes:
    """Prometheus's error JSON."""
    return f'{{"status":"error","errorType":"{kind}","error":"{message}"}}'.encode()


@pytest.mark.anyio
@pytest.mark.parametrize(
    "first",
    [
        (503, b"upstream overloaded", 0.0),
        (429, b"slow down", 0.0),
        (502, b"<html>bad gateway</html>", 0.0),
        (503, prom_error("timeout", "query timed out in query execution"), 0.0),
        (500, prom_error("internal", "boom"), 0.0),
    ],
    ids=["503", "429", "502-html", "503-prometheus-timeout", "500-prometheus-internal"],
)
async def test_transient_failure_is_retried(stand_in: StandIn, first: Reply) -> None:
    """A transient failure followed by success yields the value after a retry."""
    stand_in.script = [first, (200, OK_42, 0.0)]
    async with open_provider(stand_in.config()) as prov:
        assert await prov.query("up", budget=5) == 42.0
        assert (prov.stats.attempts, prov.stats.retries, prov.stats.failures) == (2, 1, 0)
    assert len(stand_in.requests) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (
            (400, prom_error("bad_data", "1:5: parse error: unexpected end of input"), 0.0),
            "prometheus bad_data: 1:5: parse error: unexpected end of input",
        ),
        (
            (422, prom_error("execution", "expanding series: too many samples"), 0.0),
            "prometheus execution: expanding series: too many samples",
        ),
        (
            (503, prom_error("bad_data", "1:1: parse error: x"), 0.0),
            "prometheus bad_data: 1:1: parse error: x",
        ),
        (
            (200, b"<html>oops</html>", 0.0),
            "prometheus answered HTTP 200, not Prometheus JSON: <html>oops</html>",
        ),
        (
            (404, b"404 page not found", 0.0),
            "prometheus answered HTTP 404, not Prometheus JSON: 404 page not found",
        ),
        ((401, b"", 0.0), "prometheus answered HTTP 401, not Prometheus JSON"),
        (
            (200, b"x" * 300, 0.0),
            "prometheus answered HTTP 200, not Prometheus JSON: " + "x" * 200,
        ),
        (
            (200, b'{"status":"success","data":{"resultType":"vector","result":[{}]}}', 0.0),
            "prometheus answered an unexpected result: null",
        ),
    ],
    ids=[
        "400-bad-data",
        "422-execution",
        "503-bad-data",
        "200-garbage",
        "404-text",
        "401-empty",
        "long-garbage-preview-200-bytes",
        "vector-without-value",
    ],
)
async def test_permanent_failure_is_not_retried(
    stand_in: StandIn, reply: Reply, message: str
) -> None:
    """Prometheus errors about the query and non-Prometheus answers fail at once, exactly."""
    stand_in.script = [reply, (200, OK_42, 0.0)]
    async with open_provider(stand_in.config()) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=5)
    assert str(err.value) == message
    assert len(stand_in.requests) == 1


@pytest.mark.anyio
async def test_oversized_body_is_refused(stand_in: StandIn) -> None:
    """A 10 MB answer is cut after 1 MiB and refused with its status and first bytes."""
    stand_in.script = [(200, b"9" * 10_000_000, 0.0)]
    async with open_provider(stand_in.config()) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=5)
    assert str(err.value) == (
        f"prometheus answered HTTP 200 with more than {MAX_BODY_BYTES} bytes: " + "9" * 200
    )


@pytest.mark.anyio
async def test_persistent_503_gives_up_within_budget(stand_in: StandIn) -> None:
    """Retries stop inside the budget; the error says how many attempts and the last cause."""
    stand_in.script = [(503, b"overloaded", 0.0)]
    started = time.monotonic()
    async with open_provider(stand_in.config(timeout=0.2)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 1.0
    match = re.fullmatch(
        r"gave up after (\d+) attempts in \d+\.\ds \(budget 1s\): "
        r"prometheus answered HTTP 503: overloaded",
        str(err.value),
    )
    assert match, str(err.value)
    assert int(match[1]) == len(stand_in.requests) >= 3


@pytest.mark.anyio
async def test_slow_answer_times_out_within_budget(stand_in: StandIn) -> None:
    """An answer slower than the timeout is abandoned; all attempts fit in the budget."""
    stand_in.script = [(200, OK_42, 30.0)]
    started = time.monotonic()
    async with open_provider(stand_in.config(timeout=0.3)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=1.0)
    elapsed = time.monotonic() - started
    assert 0.6 <= elapsed < 1.0
    assert re.fullmatch(
        r"gave up after 2 attempts in 0\.\ds \(budget 1s\): "
        r"prometheus did not answer within 0\.3s",
        str(err.value),
    ), str(err.value)


@pytest.mark.anyio
async def test_budget_below_timeout_makes_one_attempt(stand_in: StandIn) -> None:
    """With a budget shorter than the timeout, one attempt (bounded by the budget) is made."""
    stand_in.script = [(503, b"", 0.0)]
    async with open_provider(stand_in.config(timeout=5.0)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=0.5)
    assert re.fullmatch(
        r"gave up after 1 attempt in 0\.\ds \(budget 0\.5s\): prometheus answered HTTP 503",
        str(err.value),
    ), str(err.value)
    assert len(stand_in.requests) == 1


@pytest.mark.anyio
async def test_connection_refused_is_retried_then_reported(anyio_backend: str) -> None:
    """Nothing listening is transient: retried, then reported with the host, not the path."""
    port = refused_port()
    cfg = PrometheusProvider(
        type="prometheus", address=f"http://127.0.0.1:{port}/prom", timeout=0.2
    )
    async with open_provider(cfg) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=0.6)
    text = str(err.value)
    assert re.match(r"gave up after \d+ attempts in 0\.\ds \(budget 0\.6s\): cannot reach ", text)
    assert f"cannot reach prometheus at http://127.0.0.1:{port}/…: ConnectionRefusedError" in text


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    """Write a secret file readable by its owner only."""
    path = tmp_path / name
    path.write_text(value + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("auth", "header"),
    [
        ({"bearer_token_file": "token"}, "Bearer s3cr3t-token"),
        (
            {"username": "canaryd", "password_file": "password"},
            "Basic " + base64.b64encode(b"canaryd:s3cr3t-password").decode(),
        ),
        ({}, None),
    ],
    ids=["bearer", "basic", "none"],
)
async def test_auth_and_headers_reach_the_server(
    stand_in: StandIn, tmp_path: Path, auth: dict[str, str], header: str | None
) -> None:
    """Bearer or basic credentials from files and extra headers are sent; the query is a form."""
    files = {"token": "s3cr3t-token", "password": "s3cr3t-password"}
    resolved = {
        k: secret_file(tmp_path, v, files[v]) if k.endswith("_file") else v for k, v in auth.items()
    }
    stand_in.script = [(200, OK_42, 0.0)]
    cfg = stand_in.config(headers={"X-Scope-OrgID": "team-a"}, **resolved)
    async with open_provider(cfg) as prov:
        assert await prov.query('sum(rate(x{job="a"}[1m]))', budget=5) == 42.0
    headers, form = stand_in.requests[0]
    assert headers.get("Authorization") == header
    assert headers["X-Scope-OrgID"] == "team-a"
    assert form == {"query": 'sum(rate(x{job="a"}[1m]))'}


@pytest.mark.anyio
async def test_secrets_stay_out_of_errors(stand_in: StandIn, tmp_path: Path) -> None:
    """A failing request's error names neither the token nor its value."""
    stand_in.script = [(401, b"unauthorized", 0.0)]
    cfg = stand_in.config(bearer_token_file=secret_file(tmp_path, "t", "s3cr3t-token"))
    async with open_provider(cfg) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=5)
    assert str(err.value) == "prometheus answered HTTP 401, not Prometheus JSON: unauthorized"
    assert "s3cr3t" not in str(err.value)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "message"),
    [
        (0o644, "is readable by others; run: chmod o-r"),
        (None, "cannot read secret file"),
    ],
    ids=["world-readable", "missing"],
)
async def test_unreadable_secret_is_an_error(
    stand_in: StandIn, tmp_path: Path, mode: int | None, message: str
) -> None:
    """A secret file that is missing or readable by others fails the query without a request."""
    path = tmp_path / "token"
    if mode is not None:
        path.write_text("s3cr3t-token")
        path.chmod(mode)
    async with open_provider(stand_in.config(bearer_token_file=str(path))) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=5)
    assert message in str(err.value)
    assert "s3cr3t" not in str(err.value)
    assert stand_in.requests == []


@pytest.fixture
async def tls_stand_in(anyio_backend: str, tmp_path: Path) -> AsyncIterator[StandIn]:
    """The scripted stand-in behind HTTPS with a self-signed certificate."""
    context = self_signed(tmp_path)
    fake = StandIn(script=[(200, OK_42, 0.0)])
    app = web.Application()
    app.router.add_post("/api/v1/query", fake.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context).start()
    fake.url = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.mark.anyio
async def test_self_signed_tls_fails_without_retry(tls_stand_in: StandIn) -> None:
    """A certificate that does not verify is a permanent error that suggests insecureSkipVerify."""
    async with open_provider(tls_stand_in.config()) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=5)
        assert prov.stats.attempts == 1
    assert str(err.value).startswith(f"TLS error talking to prometheus at {tls_stand_in.url}/…")
    assert "insecureSkipVerify" in str(err.value)


@pytest.mark.anyio
async def test_insecure_skip_verify_works_and_warns_once(tls_stand_in: StandIn) -> None:
    """insecureSkipVerify reaches a self-signed endpoint and logs provider.tls_insecure once."""
    with capture_logs() as logs:
        async with open_provider(tls_stand_in.config(insecureSkipVerify=True)) as prov:
            assert await prov.query("up", budget=5) == 42.0
            assert await prov.query("up", budget=5) == 42.0
    assert logs == [
        {
            "event": "provider.tls_insecure",
            "log_level": "warning",
            "address": f"{tls_stand_in.url}/…",
        }
    ]


@pytest.mark.anyio
async def test_factory_builds_prometheus(anyio_backend: str) -> None:
    """build_provider returns a Prometheus for a prometheus config."""
    provider = build_provider(PrometheusProvider(type="prometheus"))
    try:
        assert isinstance(provider, Prometheus)
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    "form",
    [
        {"query": 'sum(rate(http_requests_total{job="a b",code!~"5.."}[1m])) + 1 / 2 * 3'},
        {"query": "".join(chr(c) for c in range(128))},
        {"query": 'up{job="café"} % ☃'},
        {"query": "x", "start": "1.000", "end": "2.000", "step": "1e+06"},
        {"query": ""},
    ],
    ids=["promql", "every-ascii-char", "non-ascii", "range-form", "empty"],
)
def test_form_body_is_urlencode(form: dict[str, str]) -> None:
    """The request body is byte for byte what ``urlencode`` makes of the form."""
    assert _form_body(form) == urlencode(form).encode()


@pytest.mark.anyio
async def test_out_of_file_descriptors_is_canaryds_own_trouble(stand_in: StandIn) -> None:
    """A query canaryd cannot send for want of file descriptors raises ResourceError."""
    stand_in.script = [(200, OK_42, 0.0)]
    async with open_provider(stand_in.config()) as prov:
        with out_of_file_descriptors(), pytest.raises(ResourceError) as err:
            await prov.query("up", budget=0.5)
        assert "Too many open files" in str(err.value)
        assert await prov.query("up", budget=5) == 42.0  # and works again once fds are free
    assert len(stand_in.requests) == 1


@pytest.mark.anyio
async def test_no_free_connection_of_its_own_pool_is_canaryds_own_trouble(
    stand_in: StandIn,
) -> None:
    """A query that never got one of canaryd's own connections raises ResourceError."""
    stand_in.script = [(200, OK_42, 30.0)]
    async with Prometheus(stand_in.config(timeout=5.0), pool=1) as prov:
        slow = asyncio.ensure_future(prov.query("up", budget=10))
        await asyncio.sleep(0.2)
        with pytest.raises(ResourceError, match="no connection to prometheus came free"):
            await prov.query("up", budget=0.5)
        stand_in.release.set()
        assert await slow == 42.0


@pytest.mark.anyio
async def test_a_slow_prometheus_is_not_canaryds_own_trouble(stand_in: StandIn) -> None:
    """A Prometheus that does not answer in time is the provider's failure, not a hold."""
    stand_in.script = [(200, OK_42, 30.0)]
    async with open_provider(stand_in.config(timeout=0.3)) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=0.5)
    assert not isinstance(err.value, ResourceError)
