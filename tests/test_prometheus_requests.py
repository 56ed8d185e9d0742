"""The Prometheus provider's requests: credentials, secrets, TLS, the form, its own trouble."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from aiohttp import web
from fdlimits import out_of_file_descriptors
from prom import open_provider
from prom_standin import OK_42, StandIn
from prom_standin import stand_in as stand_in
from structlog.testing import capture_logs
from support.tls import self_signed

from canaryd.config import PrometheusProvider
from canaryd.errors import ProviderError, ResourceError
from canaryd.providers import build_provider
from canaryd.providers.prometheus import Prometheus, _form_body


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
