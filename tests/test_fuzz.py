"""Bad input, property-based: configs, Prometheus answers, receiver answers and API requests.

``tests/test_loader_yaml.py`` already feeds the loader random YAML text and random
structures; here the loader gets *mutations of a complete valid config* (the
deep rules only a nearly valid config reaches), template text and environment
overrides, through the daemon's start path (load, render queries) and through
``canaryd check``. Prometheus answers are fed to the provider's parser and, for
oversized, endless and slow bodies, served by a real local server; webhook,
router and notifier calls meet huge, endless and slow answers; the API gets
random methods, paths, headers and bodies. Every example is bounded in time and
memory, and the only outcomes allowed are the documented ones.
"""

from __future__ import annotations

import contextlib
import copy
import http.client
import io
import json
import math
import time
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import pytest
import yaml
from aiohttp import web
from daemons import TOKEN, api_url, running_daemon, write_config
from faults import StandIn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from canaryd.cli import commands as cli
from canaryd.config import CanaryConfig, Notifier, PrometheusProvider, WebhookRouter, WebhookSpec
from canaryd.config.loader import load_config
from canaryd.core.analysis import CanaryState, Phase
from canaryd.errors import ConfigError, ProviderError, RouterError, WebhookError
from canaryd.http import MAX_ANSWER_BYTES, HttpTransport, make_transport
from canaryd.notifiers import deliver
from canaryd.providers.prometheus import (
    MAX_BODY_BYTES,
    Prometheus,
    _answer_data,
    _instant_value,
    _range_values,
)
from canaryd.routers import RouteRequest
from canaryd.routers.webhook import WebhookRouterClient
from canaryd.service.daemon import check_queries
from canaryd.service.webhooks import call as call_webhook

FUZZ = settings(
    max_examples=150,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# --------------------------------------------------------------------------- config

BASE: dict[str, Any] = {
    "listen": "127.0.0.1:9879",
    "state": "sqlite:///tmp/state.db",
    "api": {"anonymous_read": False, "max_body_bytes": 65536},
    "log": {"format": "json", "level": "info"},
    "outbox": {"maxAge": "1h", "initialBackoff": "1s", "maxBackoff": "1m", "pollInterval": "0.5s"},
    "meshProvider": "haproxy",
    "providers": {"prom": {"type": "prometheus", "address": "http://127.0.0.1:9090"}},
    "routers": {
        "lb": {
            "type": "haproxy",
            "socket": "/run/h.sock",
            "backend": "b",
            "primary": "p",
            "canary": "c",
        },
        "mesh": {"type": "webhook", "url": "http://127.0.0.1:1/routes", "timeout": "2s"},
    },
    "notifiers": {"chat": {"type": "slack", "url": "http://127.0.0.1:1/hooks/x"}},
    "templates": {"errors": {"provider": "prom", "query": 'sum(x{job="{{ target }}"})'}},
    "canaries": [
        {
            "name": "web",
            "namespace": "prod",
            "target": "web-canary",
            "router": "lb",
            "provider": "prom",
            "variables": {"tier": "front"},
            "analysis": {
                "interval": "30s",
                "threshold": 5,
                "maxWeight": 50,
                "stepWeight": 10,
                "metrics": [
                    {
                        "name": "request-success-rate",
                        "thresholdRange": {"min": 99},
                        "interval": "1m",
                    },
                    {
                        "name": "errors",
                        "templateRef": {"name": "errors"},
                        "thresholdRange": {"max": 1},
                        "onNoData": "hold",
                    },
                    {
                        "name": "custom",
                        "query": 'up{tier="{{ variables.tier }}"}',
                        "thresholdRange": {"min": 1, "max": 1},
                    },
                ],
                "webhooks": [
                    {"name": "gate", "type": "confirm-promotion", "gateTimeout": "1h"},
                    {
                        "name": "load",
                        "type": "rollout",
                        "url": "http://127.0.0.1:1/",
                        "timeout": "5s",
                    },
                    {"name": "events", "type": "event", "url": "http://127.0.0.1:1/e"},
                ],
            },
            "alerts": [{"name": "oncall", "notifier": "chat", "severity": "warn"}],
        },
        {
            "name": "api",
            "router": "mesh",
            "analysis": {"iterations": 3, "match": [{"headers": {"x": {"exact": "1"}}}]},
        },
    ],
}
"""A complete valid config touching most keys, the seed of every mutation."""


def test_base_config_is_valid(tmp_path: Path) -> None:
    """The mutation seed loads and renders, so mutations start from a valid config."""
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(BASE))
    check_queries(load_config(path, environ={}).settings)


def _paths(tree: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a node of ``tree`` (dict keys and list indices)."""
    out = [prefix]
    if isinstance(tree, dict):
        for k, v in tree.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(BASE)[1:]
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(
        [
            "0s",
            "-1s",
            "1e9h",
            "nan",
            "inf",
            "{{",
            "{{ nope }}",
            "{{ variables.x }}",
            "}}",
            "@",
            "http://",
            "https://x",
            "sqlite://",
            "127.0.0.1:99999",
            "a/b",
            "-",
            "",
            " ",
            "\x00",
        ]
    ),
)


def _containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and mappings of ``inner`` (how random config values nest)."""
    return st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)


_values = st.recursive(_scalars, _containers, max_leaves=10)


def _mutate(tree: dict[str, Any], path: tuple[Any, ...], how: str, value: Any) -> dict[str, Any]:
    """A copy of ``tree`` with the node at ``path`` replaced, removed, or given a stray key."""
    out = copy.deepcopy(tree)
    parent: Any = out
    for step in path[:-1]:
        parent = parent[step]
    last = path[-1]
    if how == "delete":
        del parent[last]
    elif how == "stray" and isinstance(parent[last], dict):
        parent[last]["strayKey"] = value
    else:
        parent[last] = value
    return out


def _check_never_crashes(path: Path) -> None:
    """Load as the daemon starts (load, render queries): a config, or ConfigError."""
    with contextlib.suppress(ConfigError):
        check_queries(load_config(path, environ={}).settings)


@FUZZ
@given(
    path=st.sampled_from(PATHS),
    how=st.sampled_from(["replace", "delete", "stray"]),
    value=_values,
)
@pytest.mark.slow
def test_mutated_valid_config_is_a_config_or_a_config_error(
    tmp_path: Path, path: tuple[Any, ...], how: str, value: Any
) -> None:
    """One mutation of a valid config loads and renders, or raises ConfigError; nothing else."""
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(_mutate(BASE, path, how, value)))
    _check_never_crashes(file)


@settings(
    max_examples=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    query=st.lists(
        st.sampled_from([*"{} .xv_$|", "variables", "target", "\x00", "é"]), max_size=20
    ).map("".join),
    path=st.sampled_from(PATHS),
    value=_values,
)
@pytest.mark.slow
def test_canaryd_check_answers_problems_never_a_traceback(
    tmp_path: Path, query: str, path: tuple[Any, ...], value: Any
) -> None:
    """``canaryd check`` on a mutated config with random template text exits 0 or 1, no trace."""
    tree = _mutate(BASE, path, "replace", value)
    if isinstance(tree.get("templates"), dict) and isinstance(
        tree["templates"].get("errors"), dict
    ):
        tree["templates"]["errors"]["query"] = query
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(tree))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.check(file)
    assert code in (0, 1)
    assert "Traceback" not in err.getvalue() + out.getvalue()
    if code == 1:
        assert err.getvalue().strip().endswith("problem(s) found")


_env_keys = st.sampled_from(
    [
        "CANARYD_LISTEN",
        "CANARYD_STATE",
        "CANARYD_API__MAX_BODY_BYTES",
        "CANARYD_OUTBOX__MAXAGE",
        "CANARYD_PROVIDERS__PROM__ADDRESS",
        "CANARYD_PROVIDERS__PROM__TIMEOUT",
        "CANARYD_CANARIES",
        "CANARYD_TEMPLATES",
        "CANARYD_ROUTERS__MESH__URL",
        "CANARYD_LOG__LEVEL",
        "CANARYD_NOPE",
    ]
)


@FUZZ
@given(
    env=st.dictionaries(
        _env_keys, st.text(max_size=30) | st.just("{}") | st.just("[1]"), max_size=3
    )
)
@pytest.mark.slow
def test_random_environment_overrides_are_a_config_or_a_config_error(
    tmp_path: Path, env: dict[str, str]
) -> None:
    """Random CANARYD_* overrides on a valid config load, or raise ConfigError; nothing else."""
    file = tmp_path / "c.yaml"
    file.write_text(yaml.safe_dump(BASE))
    with contextlib.suppress(ConfigError):
        check_queries(load_config(file, environ=env).settings)


# --------------------------------------------------------------------------- Prometheus answers

WEIRD_NUMBERS = st.one_of(
    st.sampled_from(
        [
            "NaN",
            "+Inf",
            "-Inf",
            "nan",
            "Infinity",
            "1e999",
            "-1e999",
            "0x10",
            " 1 ",
            "1_0",
            "",
            "12",
        ]
    ),
    st.integers(min_value=-(10**600), max_value=10**600),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
    st.lists(st.integers(), max_size=2),
)


def _json_containers(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Lists and mappings of ``inner``, keyed mostly with Prometheus's own keys."""
    return st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(
            [
                "status",
                "data",
                "resultType",
                "result",
                "value",
                "values",
                "metric",
                "error",
                "errorType",
            ]
        )
        | st.text(max_size=4),
        inner,
        max_size=4,
    )


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10) | WEIRD_NUMBERS,
    _json_containers,
    max_leaves=20,
)
_sample = st.one_of(
    st.tuples(st.floats(0, 2e9), WEIRD_NUMBERS).map(list),
    WEIRD_NUMBERS,
    st.lists(WEIRD_NUMBERS, max_size=3),
)
_result_kind = st.sampled_from(["vector", "scalar", "matrix", "string", "bogus", None])


@st.composite
def prometheus_documents(draw: st.DrawFn) -> Any:
    """Answers shaped like Prometheus's, with wrong types and weird numbers where values go."""
    kind = draw(_result_kind)
    if kind == "scalar":
        result: Any = draw(_sample)
    elif kind == "matrix":
        result = draw(
            st.lists(
                st.fixed_dictionaries(
                    {"metric": st.just({}), "values": st.lists(_sample, max_size=3)}
                ),
                max_size=2,
            )
        )
    else:
        result = draw(
            st.lists(st.fixed_dictionaries({"metric": st.just({}), "value": _sample}), max_size=2)
            | _json
        )
    status = draw(st.sampled_from(["success", "error", "weird"]))
    return {
        "status": status,
        "data": {"resultType": kind, "result": result},
        "error": draw(_json),
        "errorType": draw(_json),
    }


def _assert_value(value: float | None) -> None:
    assert value is None or (isinstance(value, float) and not math.isnan(value))


@FUZZ
@given(
    doc=prometheus_documents() | _json,
    status=st.sampled_from([200, 400, 422, 429, 500, 503]),
    garbage=st.binary(max_size=40),
    raw=st.booleans(),
)
@pytest.mark.slow
def test_any_prometheus_answer_is_a_value_no_data_or_a_provider_error(
    doc: Any, status: int, garbage: bytes, raw: bool
) -> None:
    """Whatever Prometheus answers, parsing gives a number, "no data" or ProviderError."""
    body = garbage if raw else json.dumps(doc).encode()
    try:
        data = _answer_data(status, body, True)
    except ProviderError:
        return
    for parse in (_instant_value, _range_values):
        try:
            got = parse(data)
        except ProviderError:
            continue
        if parse is _instant_value:
            _assert_value(got)  # type: ignore[arg-type]
        else:
            assert isinstance(got, list) and all(isinstance(v, float) for v in got)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("12", ProviderError),
        ([0, True], ProviderError),
        ([0, 10**400], ProviderError),
        ([0, "+Inf"], math.inf),
        ([0, "NaN"], None),
    ],
    ids=[
        "string-not-a-pair",
        "boolean",
        "integer-beyond-float",
        "inf-is-a-value",
        "nan-is-no-data",
    ],
)
def test_sample_values_of_the_wrong_type_are_provider_errors(value: Any, expected: Any) -> None:
    """A sample must be a [time, number-or-numeric-string] pair; Inf is a value, NaN no data."""
    data = {"resultType": "vector", "result": [{"metric": {}, "value": value}]}
    if expected is ProviderError:
        with pytest.raises(ProviderError, match="unexpected result"):
            _instant_value(data)
    else:
        assert _instant_value(data) == expected


# --------------------------------------------------------------------------- hostile servers

CHUNK = b"x" * 65536


async def _huge(request: web.Request, body: bytes) -> web.StreamResponse:
    """A 2xx whose declared body is 256 MiB (streamed, so the server itself stays small)."""
    resp = web.StreamResponse(headers={"Content-Length": str(4096 * len(CHUNK))})
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError, RuntimeError):
        for _ in range(4096):
            await resp.write(CHUNK)
    return resp


async def _endless(request: web.Request, body: bytes) -> web.StreamResponse:
    resp = web.StreamResponse()
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError, RuntimeError):
        for _ in range(100_000):  # ~6 GB: endless for any client that keeps reading
            await resp.write(CHUNK)
    return resp


async def _trickle(request: web.Request, body: bytes) -> web.StreamResponse:
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    with contextlib.suppress(ConnectionError, RuntimeError):
        for _ in range(600):
            await resp.write(b" ")
            await anyio.sleep(0.1)
    return resp


async def _slow(request: web.Request, body: bytes) -> web.StreamResponse:
    await anyio.sleep(30)
    return web.Response(text="late")


HOSTILE: dict[str, Callable[[web.Request, bytes], Awaitable[web.StreamResponse]]] = {
    "huge-body": _huge,
    "endless-chunked": _endless,
    "trickle": _trickle,
    "slow": _slow,
}
TIMEOUT = 1.0
MEMORY_LIMIT = 16 * 1024 * 1024
"""Peak Python memory one call may allocate, whatever the server sends (tracemalloc)."""


@contextlib.asynccontextmanager
async def hostile(kind: str) -> AsyncIterator[StandIn]:
    """A server answering every request the hostile way ``kind``."""
    async with StandIn(HOSTILE[kind]) as server:
        yield server


async def bounded(call: Callable[[], Awaitable[Any]], seconds: float) -> tuple[Any, float, int]:
    """Run ``call``; return its result (or exception), the seconds taken, the peak memory."""
    tracemalloc.start()
    started = time.monotonic()
    try:
        with anyio.fail_after(seconds + 5):
            try:
                result: Any = await call()
            except Exception as exc:  # the caller checks which ones are allowed
                result = exc
        return result, time.monotonic() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


SPEC = CanaryConfig.model_validate(
    {"name": "web", "router": "mesh", "analysis": {"stepWeight": 10}}
)
STATE = CanaryState(phase=Phase.PROGRESSING, revision="v2", rollout_id="r1")


async def _webhook(url: str, session: HttpTransport) -> Any:
    hook = WebhookSpec.model_validate(
        {"name": "load", "type": "rollout", "url": url, "timeout": TIMEOUT}
    )
    result = await call_webhook(session, SPEC, STATE, hook, "k")
    return result


async def _router(url: str, session: HttpTransport) -> Any:
    cfg = WebhookRouter.model_validate({"type": "webhook", "url": url, "timeout": TIMEOUT})
    request = RouteRequest("default/web", "v2", "route", 90, 10, "k")
    await WebhookRouterClient(cfg, session, name="mesh").apply(request)


async def _notifier(url: str, session: HttpTransport) -> Any:
    notifier = Notifier.model_validate({"type": "webhook", "url": url, "timeout": TIMEOUT})
    await deliver(
        session, notifier, {"text": "hi"}, "application/json", idempotency_key="k", secret=None
    )


async def _provider(url: str, session: HttpTransport) -> Any:
    cfg = PrometheusProvider.model_validate(
        {"type": "prometheus", "address": url, "timeout": TIMEOUT}
    )
    async with Prometheus(cfg) as provider:
        return await provider.query("up", budget=TIMEOUT * 2)


CALLERS = {"webhook": _webhook, "router": _router, "notifier": _notifier, "provider": _provider}
ATTEMPTS = {"webhook": 1, "router": 3, "notifier": 1, "provider": 2}
"""How many timeouts a caller may spend at most (router retries; provider budget)."""


@pytest.mark.anyio
@pytest.mark.parametrize("kind", list(HOSTILE), ids=list(HOSTILE))
@pytest.mark.parametrize("caller", list(CALLERS), ids=list(CALLERS))
@pytest.mark.slow
async def test_hostile_answers_cost_bounded_time_and_memory(caller: str, kind: str) -> None:
    """Huge, endless, trickling or slow answers end within the timeouts, memory capped."""
    async with hostile(kind) as server, make_transport() as session:
        result, took, peak = await bounded(
            lambda: CALLERS[caller](server.url + "/x", session), TIMEOUT * ATTEMPTS[caller]
        )
    assert took < TIMEOUT * ATTEMPTS[caller] + 2.0, f"{caller} took {took:.1f}s against {kind}"
    assert peak < MEMORY_LIMIT, f"{caller} held {peak / 1e6:.1f} MB against {kind}"
    # A 2xx status is an answer whatever body follows (only its first bytes are read);
    # a Prometheus answer must be whole, so those fail the query instead.
    answered = kind != "slow"  # the others send 2xx headers at once, then their body
    if caller == "provider":  # a metric needs the whole body: a broken one is an error
        assert isinstance(result, ProviderError), result
        assert len(str(result)) < 1000
    elif caller == "webhook":
        assert result.ok == answered and len(result.detail) < 1000, result
    elif answered:
        assert result is None, result  # applied / delivered
    else:
        assert isinstance(result, RouterError | WebhookError), result
        assert len(str(result)) < 1000


def test_answer_caps_are_what_the_memory_bound_assumes() -> None:
    """Webhook answers are read up to 64 KiB and Prometheus answers up to 1 MiB, no more."""
    assert MAX_ANSWER_BYTES <= 64 * 1024 and MAX_BODY_BYTES <= 1024 * 1024


# --------------------------------------------------------------------------- API requests

_segment = st.one_of(
    st.sampled_from(
        ["prod", "web", "default", "..", ".", "%2F", "%00", "a" * 300, "", "-", "%F0%9F"]
    ),
    st.text(min_size=1, max_size=12).map(lambda t: quote(t, safe="")),
)
_action = st.sampled_from(
    [
        "",
        "rollouts",
        "promote",
        "abort",
        "pause",
        "resume",
        "gates/rollout/approve",
        "gates/promotion/approve",
        "gates/nope/approve",
        "nope",
        "rollouts/x",
    ]
)
_body = st.one_of(
    st.none(),
    st.binary(max_size=200),
    st.builds(lambda d: json.dumps(d).encode(), _json),
    st.fixed_dictionaries(
        {
            "revision": st.one_of(st.text(max_size=140), st.integers(), st.none(), st.just("v2")),
            "metadata": st.one_of(
                st.dictionaries(
                    st.text(max_size=5), st.text(max_size=5) | st.integers(), max_size=3
                ),
                st.text(max_size=3),
            ),
        },
        optional={"extra": _json},
    ).map(lambda d: json.dumps(d).encode()),
    st.just(b"{" * 100_000),
    st.just(b'{"revision": "' + b"v" * 200_000 + b'"}'),
)
_auth = st.sampled_from(
    [
        None,
        f"Bearer {TOKEN}",
        "Bearer wrong",
        f"bearer {TOKEN}",
        f"Basic {TOKEN}",
        "Bearer",
        f"Bearer {TOKEN}x",
        "Bearer \u00e9",
    ]
)
_content_type = st.sampled_from(
    [
        None,
        "application/json",
        "text/plain",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "image/png",
    ]
)


def _request(
    port: int, method: str, path: str, body: bytes | None, headers: dict[str, str], chunked: bool
) -> tuple[int, bytes]:
    """One blocking HTTP request; (status, body)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        if chunked and body is not None:
            conn.putrequest(method, path)
            for k, v in headers.items():
                conn.putheader(k, v)
            conn.putheader("Transfer-Encoding", "chunked")
            conn.endheaders()
            for i in range(0, len(body), 8192):
                part = body[i : i + 8192]
                conn.send(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            conn.send(b"0\r\n\r\n")
        else:
            conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


@pytest.mark.anyio
@pytest.mark.slow
async def test_random_api_requests_never_get_a_5xx(tmp_path: Path) -> None:
    """Random methods, paths, tokens, content types and bodies: never 5xx, errors are JSON."""
    cfg = write_config(
        tmp_path,
        [
            {
                "name": "web",
                "namespace": "prod",
                "router": "mesh",
                "analysis": {"stepWeight": 50, "interval": "1h"},
            }
        ],
        routers={"mesh": {"type": "webhook", "url": "http://127.0.0.1:9/routes"}},
    )
    port = int(api_url(cfg).rsplit(":", 1)[1])
    seen: list[int] = []

    @settings(max_examples=250, deadline=None, print_blob=True)
    @given(
        method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]),
        ns=_segment,
        name=_segment,
        action=_action,
        body=_body,
        auth=_auth,
        content_type=_content_type,
        chunked=st.booleans(),
    )
    def probe(
        method: str,
        ns: str,
        name: str,
        action: str,
        body: bytes | None,
        auth: str | None,
        content_type: str | None,
        chunked: bool,
    ) -> None:
        path = f"/api/v1/canaries/{ns}/{name}" + (f"/{action}" if action else "")
        headers = {
            k: v
            for k, v in (("Authorization", auth), ("Content-Type", content_type))
            if v is not None
        }
        status, answer = _request(port, method, path, body, headers, chunked)
        seen.append(status)
        assert status < 500, (method, path, status, answer[:200])
        if status >= 400 and method != "HEAD":
            assert "error" in json.loads(answer), answer[:200]

    async with running_daemon(cfg):
        await anyio.to_thread.run_sync(probe)
    assert {401, 404} <= set(seen), sorted(set(seen))
