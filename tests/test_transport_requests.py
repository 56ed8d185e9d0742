"""Prometheus provider's HTTP/1.1 client: request bytes, addresses, headers, secrets, errors."""

from __future__ import annotations

import asyncio
import base64
import socket
from pathlib import Path

import pytest
from aiohttp import web
from pydantic import ValidationError
from support import refused_port
from transport_servers import (
    OK_42,
    WAIT,
    RawServer,
    keep_answering,
    pool_for,
    raw_server,
    raw_url,
    replying,
    web_server,
)

from canaryd.config import PrometheusProvider
from canaryd.errors import ProviderError
from canaryd.providers.prometheus import Prometheus
from canaryd.providers.transport import Pool, TransportError

pytestmark = pytest.mark.anyio


# --------------------------------------------------------------------------- broken answers


async def test_garbage_answer_is_a_transport_error() -> None:
    """Bytes that are not HTTP fail the post with TransportError and drop the connection."""

    async def garbage(
        srv: RawServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        await srv.read_request(reader)
        writer.write(b"SSH-2.0-OpenSSH_9.6 not HTTP at all\r\n\r\n")
        await srv.read_request(reader)

    async with raw_server(garbage) as srv, pool_for(raw_url(srv)) as pool:
        with pytest.raises(TransportError, match="not an HTTP answer") as err:
            await pool.post("/q", b"", timeout=WAIT)
        assert type(err.value) is TransportError
        assert pool.connections == 0
        await srv.wait_until(lambda: srv.eofs == 1)


async def test_connection_refused_names_the_error_and_gives_the_slot_back() -> None:
    """Nothing listening: TransportError naming ConnectionRefusedError; the slot is free again."""
    async with pool_for(f"http://127.0.0.1:{refused_port()}", limit=1) as pool:
        for _ in range(3):  # with limit=1, a slot kept would make the next a pool timeout
            with pytest.raises(TransportError, match=r"^ConnectionRefusedError: ") as err:
                await pool.post("/q", b"", timeout=0.5)
            assert type(err.value) is TransportError
            assert pool.connections == 0


# --------------------------------------------------------------------------- request bytes


async def test_request_bytes_are_exact() -> None:
    """The request is the prefixed path, Host with port, pool and post headers, length, body."""
    async with (
        raw_server(keep_answering) as srv,
        pool_for(f"http://127.0.0.1:{srv.port}/prom/", head=b"User-Agent: t/1\r\n") as pool,
    ):
        await pool.post("/api/v1/query", b"query=up%7B%7D", timeout=WAIT, headers=b"X-A: 1\r\n")
        await pool.post("/api/v1/query_range", b"", timeout=WAIT)
    assert srv.requests == [
        b"POST /prom/api/v1/query HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{srv.port}\r\n".encode()
        + b"User-Agent: t/1\r\nX-A: 1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 14\r\n\r\n"
        b"query=up%7B%7D",
        b"POST /prom/api/v1/query_range HTTP/1.1\r\n"
        + f"Host: 127.0.0.1:{srv.port}\r\n".encode()
        + b"User-Agent: t/1\r\n"
        b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 0\r\n\r\n",
    ]


@pytest.mark.parametrize(
    ("address", "host"),
    [
        ("http://prom.example", b"prom.example"),
        ("http://prom.example:80", b"prom.example"),
        ("https://prom.example:443/x", b"prom.example"),
        ("http://prom.example:443", b"prom.example:443"),
        ("https://prom.example:9090", b"prom.example:9090"),
        ("http://[::1]", b"[::1]"),
        ("http://user:pw@prom.example:8080", b"prom.example:8080"),
    ],
    ids=["no-port", "http-80", "https-443", "http-443", "https-9090", "ipv6", "userinfo"],
)
def test_host_line_has_the_port_unless_default(address: str, host: bytes) -> None:
    """The Host header carries the port only when it is not the scheme's default."""
    pool = Pool(address, limit=1, verify_tls=True, max_body=1)
    assert pool._host_line == b"Host: " + host + b"\r\n"


@pytest.mark.parametrize(
    "address",
    ["ftp://prom.example", "http://", "unix:///run/prom.sock"],
    ids=["ftp", "no-host", "unix"],
)
def test_address_must_be_http_with_a_host(address: str) -> None:
    """An address that is not http(s) with a host is refused when the pool is made."""
    with pytest.raises(ValueError, match="not an http"):
        Pool(address, limit=1, verify_tls=True, max_body=1)


def ipv6_loopback() -> bool:
    """``::1`` can be bound here."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as sock:
            sock.bind(("::1", 0))
    except OSError:
        return False
    return True


async def test_ipv6_address_gets_a_bracketed_host() -> None:
    """``http://[::1]:port`` connects over IPv6 and sends ``Host: [::1]:port``."""
    if not ipv6_loopback():
        pytest.skip("IPv6 loopback (::1) is not available here")
    async with (
        raw_server(keep_answering, host="::1") as srv,
        pool_for(f"http://[::1]:{srv.port}") as pool,
    ):
        assert (await pool.post("/q", b"", timeout=WAIT)).body == b"ok"
    assert f"\r\nHost: [::1]:{srv.port}\r\n".encode() in srv.requests[0]


# --------------------------------------------------------------------------- provider


def secret_file(tmp_path: Path, name: str, value: str) -> str:
    """A secret file readable by its owner only, holding ``value`` as it is."""
    path = tmp_path / name
    path.write_text(value)
    path.chmod(0o600)
    return str(path)


def provider_config(url: str, **overrides: object) -> PrometheusProvider:
    """A provider config for a local server (short timeout)."""
    return PrometheusProvider.model_validate(
        {"type": "prometheus", "address": url, "timeout": 1.0, **overrides}
    )


async def test_token_with_a_line_break_is_refused_without_sending(tmp_path: Path) -> None:
    """A bearer token holding a line break fails naming the header, not the token; nothing sent."""
    token = secret_file(tmp_path, "token", "s3cr3t-token\r\nX-Injected: yes\n")
    async with (
        web_server(replying(OK_42)) as srv,
        Prometheus(provider_config(srv.url, bearer_token_file=token)) as prov,
    ):
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=2)
        assert prov.stats.attempts == 1
    assert str(err.value) == (
        "header 'Authorization': a name is one word without ':', a value one line; not sent"
    )
    assert "s3cr3t" not in str(err.value)
    assert srv.paths == []


async def test_url_userinfo_is_basic_auth_and_scrubbed_from_errors() -> None:
    """``user:pw@`` in the address is sent as basic auth and never appears in an error."""
    password = "s3cr3t@pw"
    encoded = base64.b64encode(f"canaryd:{password}".encode()).decode()

    async def echo(request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        text = f"denied {auth} (that is canaryd:{password}, password {password})"
        return web.Response(status=401, text=text)

    async with web_server(echo) as srv:
        address = srv.url.replace("http://", "http://canaryd:s3cr3t%40pw@")
        async with Prometheus(provider_config(address)) as prov:
            with pytest.raises(ProviderError) as err:
                await prov.query("up", budget=2)
    assert srv.headers[0]["Authorization"] == f"Basic {encoded}"
    assert str(err.value) == (
        "prometheus answered HTTP 401, not Prometheus JSON: "
        "denied Basic *** (that is ***, password ***)"
    )


async def test_url_userinfo_stays_out_of_connection_errors() -> None:
    """A connection error names the host and port, never the address's user info."""
    port = refused_port()
    cfg = provider_config(f"http://canaryd:s3cr3t-pw@127.0.0.1:{port}", timeout=0.2)
    async with Prometheus(cfg) as prov:
        with pytest.raises(ProviderError) as err:
            await prov.query("up", budget=0.3)
    assert f"cannot reach prometheus at http://127.0.0.1:{port}/…: ConnectionRefusedError" in str(
        err.value
    )
    assert "s3cr3t" not in str(err.value)
    assert "canaryd" not in str(err.value)


def test_config_refuses_a_header_that_is_not_latin1() -> None:
    """A configured header value HTTP cannot carry is a config error naming the header."""
    with pytest.raises(ValidationError, match=r"header 'X-Team': only Latin-1 text can be sent"):
        PrometheusProvider.model_validate({"type": "prometheus", "headers": {"X-Team": "☃"}})


async def test_secret_that_is_not_latin1_is_refused_without_sending(tmp_path: Path) -> None:
    """A bearer token file HTTP cannot carry fails naming the header, not the token."""
    token = secret_file(tmp_path, "token", "s3cr3t-t☃ken")
    async with web_server(replying(OK_42)) as srv:
        cfg = provider_config(srv.url, bearer_token_file=token)
        with pytest.raises(
            ProviderError,
            match=r"^header 'Authorization': only Latin-1 text can be sent; not sent$",
        ) as e:
            async with Prometheus(cfg) as prov:
                await prov.query("up", budget=2)
    assert "s3cr3t" not in str(e.value)
    assert srv.paths == []


@pytest.mark.parametrize(
    "headers",
    [{"X-Scope-OrgID": "team-a\nX-Injected: yes"}, {"X-A": "a\rb"}, {"X-A: b": "c"}, {"": "c"}],
    ids=["lf-in-value", "cr-in-value", "colon-in-name", "empty-name"],
)
def test_config_refuses_headers_that_would_split_a_request(headers: dict[str, str]) -> None:
    """A configured header with a line break, or a name that is not one word, is a config error."""
    with pytest.raises(ValidationError, match="a name is one word without ':', a value one line"):
        PrometheusProvider.model_validate({"type": "prometheus", "headers": headers})


async def test_configured_headers_reach_the_server() -> None:
    """Headers from the config are sent with every query, beside User-Agent and Accept."""
    async with (
        web_server(replying(OK_42)) as srv,
        Prometheus(provider_config(srv.url, headers={"X-Scope-OrgID": "team-a"})) as prov,
    ):
        assert await prov.query("up", budget=2) == 42.0
        assert await prov.query("up", budget=2) == 42.0
    for headers in srv.headers:
        assert headers["X-Scope-OrgID"] == "team-a"
        assert headers["Accept"] == "application/json"
        assert headers["User-Agent"].startswith("canaryd")
    assert len(set(srv.peers)) == 1
