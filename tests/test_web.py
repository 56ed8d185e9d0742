"""The web provider: JSONPath subset, GET/POST requests, secret headers, answers and retries."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError
from standin import stand_in

from canaryd.config import ProviderConfig, WebProvider
from canaryd.config.jsonpath import parse_path, select
from canaryd.config.loader import load_config
from canaryd.errors import ConfigError, ProviderError
from canaryd.providers import build_provider
from canaryd.providers.web import Web, to_number

# --------------------------------------------------------------------------- JSONPath subset


@pytest.mark.parametrize(
    ("path", "steps"),
    [
        ("$", ()),
        ("$.data.value", ("data", "value")),
        ("$.results[0].v", ("results", 0, "v")),
        ("$['a.b'][\"c d\"][-1]", ("a.b", "c d", -1)),
        ("{$.data.ok}", ("data", "ok")),
        ("$.x-y", ("x-y",)),
    ],
    ids=["root", "dots", "index", "quoted-and-negative", "argo-braces", "dash"],
)
def test_paths_parse(path: str, steps: tuple[str | int, ...]) -> None:
    """The supported subset parses to key and index steps."""
    assert parse_path(path) == steps


@pytest.mark.parametrize(
    "path", ["data.value", "$.data[*]", "$..value", "$.a[0:2]", "$.a[?(@.x)]", "$.a."]
)
def test_unsupported_paths_are_refused(path: str) -> None:
    """Paths outside the subset (wildcards, slices, filters, descent) are refused."""
    with pytest.raises(ValueError, match="JSONPath"):
        parse_path(path)


@pytest.mark.parametrize(
    ("doc", "path", "expected"),
    [
        ({"data": {"value": 3}}, "$.data.value", (True, 3)),
        ({"data": {}}, "$.data.value", (False, None)),
        ({"data": None}, "$.data.value", (False, None)),
        ({"r": [1, 2]}, "$.r[5]", (False, None)),
        ({"r": [1, 2]}, "$.r[-1]", (True, 2)),
    ],
    ids=["found", "missing-key", "null-parent", "index-beyond", "negative"],
)
def test_select(doc: Any, path: str, expected: tuple[bool, Any]) -> None:
    """A path finds its value, or reports it absent."""
    assert select(doc, parse_path(path)) == expected


def test_select_into_the_wrong_kind_is_an_error() -> None:
    """A key looked up in an array (a wrong path) is an error, not no data."""
    with pytest.raises(ValueError, match="not an object"):
        select({"data": [1]}, parse_path("$.data.value"))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(3, 3.0), (0.25, 0.25), ("0.5", 0.5), (None, None), ([], None), ("NaN", None)],
    ids=["int", "float", "numeric-string", "null", "empty-list", "nan"],
)
def test_to_number(value: Any, expected: float | None) -> None:
    """Numbers and numeric strings are values; null, [] and NaN are no data."""
    assert to_number(value) == expected


@pytest.mark.parametrize("value", [True, {"a": 1}, [1], "n/a"], ids=["bool", "obj", "list", "text"])
def test_not_a_number_is_an_error(value: Any) -> None:
    """Booleans, objects, lists of values and text are errors."""
    with pytest.raises(ProviderError, match="not a number"):
        to_number(value)


def test_config_refuses_an_unsupported_path() -> None:
    """A jsonPath outside the subset is a configuration error."""
    with pytest.raises(ValidationError, match="JSONPath"):
        WebProvider.model_validate(
            {"type": "web", "address": "http://127.0.0.1:1", "jsonPath": "$..v"}
        )


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("contentType", "text/plain\r\nX-Evil: 1", "one line"),
        ("secret_headers", [{"name": "X-Key: evil", "value_file": "/k"}], "one word"),
        ("headers", {"X-A": "a\nb"}, "one line"),
        ("address", "http://127.0.0.1:1/api?key=abc", "no query string"),
    ],
    ids=["content-type", "secret-header-name", "header-value", "address-query"],
)
def test_config_refuses_what_a_request_cannot_carry(key: str, value: object, needle: str) -> None:
    """A header that would split the request, or a query string in the address, is refused."""
    with pytest.raises(ValidationError, match=needle):
        WebProvider.model_validate(
            {"type": "web", "address": "http://127.0.0.1:1", "jsonPath": "$.v", key: value}
        )


# --------------------------------------------------------------------------- requests


def config(url: str, **extra: object) -> WebProvider:
    """A web provider config for a stand-in."""
    return WebProvider.model_validate(
        {"type": "web", "address": url, "jsonPath": "$.data.value", "timeout": 1.0, **extra}
    )


@pytest.mark.anyio
async def test_get_appends_the_query_and_sends_secret_headers(tmp_path: Path) -> None:
    """GET appends the rendered query to the address; secret headers come from their files."""
    key = tmp_path / "key"
    key.write_text("api-key-123\n")
    os.chmod(key, 0o600)
    async with stand_in((200, b'{"data": {"value": "1.5"}}', 0.0)) as fake:
        cfg = config(
            fake.url + "/api",
            headers={"X-Team": "sre"},
            secret_headers=[{"name": "X-Api-Key", "value_file": str(key)}],
        )
        async with Web(cfg) as provider:
            assert await provider.query("/error-rate?service=web&window=1m", budget=2) == 1.5
    seen = fake.requests[0]
    assert (seen.method, seen.path, seen.query) == (
        "GET",
        "/api/error-rate",
        {"service": "web", "window": "1m"},
    )
    assert seen.headers["X-Api-Key"] == "api-key-123" and seen.headers["X-Team"] == "sre"


@pytest.mark.anyio
async def test_post_sends_the_query_as_the_body() -> None:
    """POST sends the rendered query as the body with the configured content type."""
    async with (
        stand_in((200, b'{"data": {"value": 7}}', 0.0)) as fake,
        Web(config(fake.url + "/q", method="POST")) as provider,
    ):
        assert await provider.query('{"service": "web"}', budget=2) == 7
    seen = fake.requests[0]
    assert (seen.method, seen.path, seen.body) == ("POST", "/q", b'{"service": "web"}')
    assert seen.headers["Content-Type"] == "application/json"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [(200, b'{"data": {}}', None), (200, b'{"data": {"value": null}}', None)],
    ids=["missing", "null"],
)
async def test_no_data(status: int, body: bytes, expected: None) -> None:
    """A missing or null value is no data."""
    async with stand_in((status, body, 0.0)) as fake, Web(config(fake.url)) as provider:
        assert await provider.query("/", budget=2) is expected


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("reply", "needle"),
    [
        ((404, b"not found", 0.0), "HTTP 404"),
        ((302, b"", 0.0), "HTTP 302"),
        ((200, b"<html>", 0.0), "not JSON"),
        ((200, b'{"data": [1]}', 0.0), "not an object"),
    ],
    ids=["404", "redirect-not-followed", "not-json", "wrong-shape"],
)
async def test_errors_are_not_retried(reply: tuple[int, bytes, float], needle: str) -> None:
    """4xx, redirects and unusable answers fail at once (one request)."""
    async with stand_in(reply) as fake:
        async with Web(config(fake.url)) as provider:
            with pytest.raises(ProviderError, match=needle):
                await provider.query("/", budget=2)
        assert len(fake.requests) == 1


@pytest.mark.anyio
async def test_rate_limit_is_retried() -> None:
    """A 429 then a 200 yields the value."""
    async with stand_in((429, b"slow", 0.0), (200, b'{"data":{"value":2}}', 0.0)) as fake:
        async with Web(config(fake.url)) as provider:
            assert await provider.query("/", budget=3) == 2
        assert len(fake.requests) == 2


@pytest.mark.anyio
async def test_secret_header_scrubbed_from_errors(tmp_path: Path) -> None:
    """An error page echoing a secret header's value shows *** instead."""
    key = tmp_path / "key"
    key.write_text("hunter2-key")
    os.chmod(key, 0o600)
    async with stand_in((403, b"key hunter2-key refused", 0.0)) as fake:
        cfg = config(fake.url, secret_headers=[{"name": "X-Key", "value_file": str(key)}])
        async with Web(cfg) as provider:
            with pytest.raises(ProviderError) as caught:
                await provider.query("/", budget=2)
    assert "hunter2" not in str(caught.value) and "***" in str(caught.value)


@pytest.mark.anyio
async def test_get_query_must_be_a_path_and_range_is_refused() -> None:
    """A GET query that is not a path or query string, and any range query, are errors."""
    async with Web(config("http://127.0.0.1:1")) as provider:
        with pytest.raises(ProviderError, match="starts with"):
            await provider.query("http://elsewhere/", budget=1)
        with pytest.raises(ProviderError, match="no range queries"):
            await provider.query_range("/", start=0, end=1, step=1, budget=1)


@pytest.mark.anyio
async def test_factory_builds_web() -> None:
    """The factory turns a web config into a Web provider."""
    provider = build_provider(config("http://127.0.0.1:1"))
    try:
        assert isinstance(provider, Web)
    finally:
        await provider.aclose()


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["graphite", "influxdb", "web"])
async def test_redirect_is_an_error_naming_only_the_host(kind: str) -> None:
    """A 3xx from any new provider is not followed: one request, the target host named."""
    async with stand_in((302, b"", 0.0)) as fake:
        fake.headers["Location"] = "http://login.example.net/sso?token=abc"
        extra = {"jsonPath": "$.v"} if kind == "web" else {}
        cfg = TypeAdapter(ProviderConfig).validate_python(
            {"type": kind, "address": fake.url, **extra}
        )
        provider = build_provider(cfg)
        try:
            with pytest.raises(ProviderError) as caught:
                await provider.query("/q" if kind == "web" else "q", budget=2)
        finally:
            await provider.aclose()
        assert len(fake.requests) == 1
    message = str(caught.value)
    assert message.startswith(f"{kind} answered HTTP 302 redirect to http://login.example.net/")
    assert "token" not in message


def test_missing_secret_header_file_is_a_config_problem(tmp_path: Path) -> None:
    """canaryd check reports a secret header whose file is missing, at its key."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "providers:\n"
        "  api:\n"
        "    type: web\n"
        "    address: http://127.0.0.1:1\n"
        "    jsonPath: $.v\n"
        "    secret_headers:\n"
        f"      - {{name: X-Key, value_file: {tmp_path}/nope}}\n"
    )
    with pytest.raises(ConfigError, match=r"secret_headers\[0\]\.value_file: cannot read secret"):
        load_config(config, environ={})


def test_compare_on_a_web_provider_is_a_config_problem(tmp_path: Path) -> None:
    """canaryd check refuses a compare: metric on a web provider (it has no range queries)."""
    config = tmp_path / "c.yaml"
    config.write_text(
        "providers:\n"
        "  api: {type: web, address: 'http://127.0.0.1:1', jsonPath: $.v}\n"
        "routers:\n"
        "  lb: {type: webhook, url: 'http://127.0.0.1:9/routes'}\n"
        "canaries:\n"
        "  - name: web\n"
        "    router: lb\n"
        "    analysis:\n"
        "      stepWeight: 10\n"
        "      metrics:\n"
        "        - name: latency\n"
        "          query: /latency\n"
        "          compare: {direction: increase}\n"
    )
    with pytest.raises(
        ConfigError,
        match=r"metrics\[0\]\.compare: default/web: compare: needs range queries.*'api'",
    ):
        load_config(config, environ={})
