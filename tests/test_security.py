"""Security: who may steer rollouts, where secrets may go, TLS, request size, listen address.

The full-secrets test runs a real daemon process with every kind of secret
configured (API token, router, webhook and notifier signing secrets, a
notifier ``url_file`` holding a signed URL, Prometheus bearer and basic-auth
credentials) against receivers that echo what they got back in their error
answers, and then greps the process's log, the state database's bytes and
every API answer for each secret string.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import re
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from daemons import TOKEN, api_url, client_for, running_daemon, write_config
from faults import StandIn
from prom import PrometheusServer
from pydantic import BaseModel
from structlog.testing import capture_logs
from support import eventually
from support.tls import CERT, KEY_PEM

from canaryd.config import (
    CanaryConfig,
    Notifier,
    PrometheusProvider,
    Settings,
    WebhookRouter,
    WebhookSpec,
)
from canaryd.core.analysis import CanaryState, Phase
from canaryd.errors import ProviderError, RouterError, WebhookError
from canaryd.http import HttpTransport, make_transport
from canaryd.notifiers import deliver
from canaryd.providers.prometheus import Prometheus
from canaryd.routers import RouteRequest
from canaryd.routers.webhook import WebhookRouterClient
from canaryd.service.daemon import run_daemon
from canaryd.service.openapi import document
from canaryd.service.webhooks import call as call_webhook

pytestmark = pytest.mark.anyio

KEY = "prod/web"

# --------------------------------------------------------------------------- the token

MUTATING = [
    path.replace("{ns}", "prod").replace("{name}", "web").replace("{gate}", "promotion")
    for path, ops in document()["paths"].items()
    if "post" in ops
]
BAD_AUTH = {
    "none": None,
    "wrong": "Bearer not-the-token",
    "token-plus-one": f"Bearer {TOKEN}x",
    "token-prefix": f"Bearer {TOKEN[:-1]}",
    "other-scheme": f"Basic {TOKEN}",
    "token-alone": TOKEN,
    "empty-bearer": "Bearer ",
}


def one_canary() -> list[dict[str, Any]]:
    """One canary whose router is unreachable (nothing here needs it)."""
    return [
        {
            "name": "web",
            "namespace": "prod",
            "router": "mesh",
            "analysis": {"stepWeight": 50, "interval": "1h", "threshold": 5},
        }
    ]


MESH = {"mesh": {"type": "webhook", "url": "http://127.0.0.1:9/routes"}}


@pytest.mark.parametrize("path", MUTATING, ids=[p.rsplit("/web/", 1)[1] for p in MUTATING])
async def test_every_mutating_endpoint_refuses_requests_without_the_token(
    tmp_path: Path, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """401 with a challenge for every bad Authorization; the token never echoed; state unchanged."""
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return bool(real(a, b))

    monkeypatch.setattr(hmac, "compare_digest", spy)  # the API calls it
    cfg = write_config(tmp_path, one_canary(), routers=MESH)
    body = json.dumps({"revision": "v2"})
    answers = []
    with capture_logs() as logs:
        async with running_daemon(cfg) as daemon, aiohttp.ClientSession() as session:
            for case, auth in BAD_AUTH.items():
                headers = {"Content-Type": "application/json"}
                if auth is not None:
                    headers["Authorization"] = auth
                async with session.post(api_url(cfg) + path, data=body, headers=headers) as resp:
                    answers.append(
                        (case, resp.status, resp.headers.get("WWW-Authenticate"), await resp.text())
                    )
            state = daemon.runners[KEY].state
    for case, status, challenge, text in answers:
        assert (status, challenge) == (401, 'Bearer realm="canaryd"'), (case, status, text)
        assert "error" in json.loads(text) and TOKEN[:8] not in text, (case, text)
    assert state == CanaryState(), "a refused request changed the canary"
    assert TOKEN[:8] not in repr(list(logs))
    assert compared and all(b == TOKEN.encode() for _, b in compared), (
        "not compared in constant time"
    )


async def test_the_right_token_is_accepted(tmp_path: Path) -> None:
    """The same requests with the token go through (so the refusals above are about the token)."""
    cfg = write_config(tmp_path, one_canary(), routers=MESH)
    async with running_daemon(cfg), client_for(cfg) as client:
        started = await client.post(f"{KEY}/rollouts", {"revision": "v2"})
        paused = await client.post(f"{KEY}/pause", {})
    assert (started["revision"], paused["phase"]) == ("v2", "Paused")


# --------------------------------------------------------------------------- secret files


def _secret(tmp_path: Path, name: str, value: str, mode: int) -> str:
    path = tmp_path / name
    path.write_text(value)
    path.chmod(mode)
    return str(path)


SECRET_PLACES: dict[str, Callable[[str], dict[str, Any]]] = {
    "api-token": lambda f: {"api": {"token_file": f}},
    "router-secret": lambda f: {"routers": {"mesh": {**MESH["mesh"], "secret_file": f}}},
    "notifier-url-file": lambda f: {
        "notifiers": {"pager": {"type": "slack", "url_file": f}},
        "canaries": [{**one_canary()[0], "alerts": [{"name": "a", "notifier": "pager"}]}],
    },
    "notifier-secret": lambda f: {
        "notifiers": {"pager": {"type": "webhook", "url": "http://127.0.0.1:9/", "secret_file": f}}
    },
    "webhook-secret": lambda f: {
        "canaries": [
            {
                **one_canary()[0],
                "analysis": {
                    "stepWeight": 50,
                    "webhooks": [
                        {
                            "name": "h",
                            "type": "event",
                            "url": "http://127.0.0.1:9/",
                            "secret_file": f,
                        }
                    ],
                },
            }
        ]
    },
    "prometheus-bearer": lambda f: {
        "providers": {"prom": {"type": "prometheus", "bearer_token_file": f}}
    },
    "prometheus-password": lambda f: {
        "providers": {"prom": {"type": "prometheus", "username": "u", "password_file": f}}
    },
}


@pytest.mark.parametrize("place", list(SECRET_PLACES), ids=list(SECRET_PLACES))
async def test_daemon_refuses_to_start_with_a_secret_file_readable_by_others(
    tmp_path: Path, place: str
) -> None:
    """The start path exits 1 naming the file and the chmod that fixes it, never its content."""
    value = f"s3cr3t-{secrets.token_hex(8)}"
    secret = _secret(tmp_path, "secret", value, 0o644)
    top: dict[str, Any] = {"routers": MESH, **SECRET_PLACES[place](secret)}
    canaries = top.pop("canaries", one_canary())
    cfg = write_config(tmp_path, canaries, **top)
    with capture_logs() as logs, anyio.fail_after(20):
        code = await run_daemon(cfg)
    text = json.dumps(logs, default=str)
    assert code == 1
    assert f"secret file {secret} is readable by others; run: chmod o-r {secret}" in text, text
    assert value not in text and "Traceback" not in text


@pytest.mark.slow
def test_canaryd_run_with_a_world_readable_token_file_exits_with_a_clear_message(
    tmp_path: Path,
) -> None:
    """``canaryd run`` itself (a process) prints the problem as one log line and exits 1."""
    cfg = write_config(tmp_path, one_canary(), routers=MESH)
    (tmp_path / "api-token").chmod(0o644)
    done = subprocess.run(
        [sys.executable, "-m", "canaryd", "run", "-c", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "CANARYD_LOG_FORMAT": "json"},
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "is readable by others; run: chmod o-r" in out and str(tmp_path / "api-token") in out
    assert TOKEN not in out and "Traceback" not in out


# --------------------------------------------------------------------------- TLS


@asynccontextmanager
async def https_server(tmp_path: Path, answer: bytes) -> AsyncIterator[str]:
    """An HTTPS server with the self-signed certificate, answering ``answer`` as JSON."""
    (tmp_path / "cert.pem").write_text(CERT)
    (tmp_path / "key.pem").write_text(KEY_PEM)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")

    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=answer, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def _fields(model: type[BaseModel], seen: set[type[BaseModel]]) -> set[str]:
    """``Model.field`` names of every config model reachable from ``model``."""
    out: set[str] = set()
    if model in seen:
        return out
    seen.add(model)
    for name, info in model.model_fields.items():
        out.add(f"{model.__name__}.{name}")
        for kind in _models_in(info.annotation):
            out |= _fields(kind, seen)
    return out


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in getattr(annotation, "__args__", ()) for m in _models_in(arg)]


def test_insecure_skip_verify_and_disable_tls_are_the_only_keys_that_touch_tls() -> None:
    """No config key but a provider's insecureSkipVerify and a webhook's disableTLS (Flagger's
    two) can turn verification off (or point it at another trust store)."""
    names = _fields(Settings, set())
    tls = {n for n in names if re.search(r"verify|insecure|ssl|tls|cert|cafile|ca_file", n, re.I)}
    providers = ("Prometheus", "Graphite", "InfluxDB", "Web", "Datadog", "NewRelic", "Dynatrace")
    assert tls == {f"{p}Provider.insecureSkipVerify" for p in providers} | {
        "WebhookSpec.disableTLS"
    }


PROM_ANSWER = json.dumps(
    {
        "status": "success",
        "data": {"resultType": "vector", "result": [{"metric": {}, "value": [0, "99.5"]}]},
    }
).encode()


async def test_provider_verifies_tls_unless_insecure_skip_verify_and_then_warns(
    tmp_path: Path,
) -> None:
    """A self-signed Prometheus fails with a TLS error naming the key; with the key, a warning."""
    async with https_server(tmp_path, PROM_ANSWER) as url:
        strict = PrometheusProvider.model_validate({"type": "prometheus", "address": url})
        with (
            capture_logs() as quiet,
            pytest.raises(ProviderError, match=r"TLS error.*insecureSkipVerify"),
        ):
            async with Prometheus(strict) as provider:
                await provider.query("up", budget=3)
        insecure = strict.model_copy(update={"insecureSkipVerify": True})
        with capture_logs() as loud:
            async with Prometheus(insecure) as provider:
                value = await provider.query("up", budget=3)
    assert value == 99.5
    assert not [e for e in quiet if e["event"] == "provider.tls_insecure"]
    warnings = [e for e in loud if e["event"] == "provider.tls_insecure"]
    assert len(warnings) == 1 and warnings[0]["log_level"] == "warning"


async def _hook(url: str, session: HttpTransport) -> Any:
    spec = CanaryConfig.model_validate(
        {"name": "web", "router": "mesh", "analysis": {"stepWeight": 10}}
    )
    hook = WebhookSpec.model_validate({"name": "h", "url": url, "timeout": "3s"})
    return await call_webhook(
        session, spec, CanaryState(phase=Phase.PROGRESSING, revision="v2"), hook, "k"
    )


async def _route(url: str, session: HttpTransport) -> Any:
    cfg = WebhookRouter.model_validate({"type": "webhook", "url": url, "timeout": "3s"})
    await WebhookRouterClient(cfg, session, name="mesh").apply(
        RouteRequest("default/web", "v2", "route", 90, 10, "k")
    )


async def _alert(url: str, session: HttpTransport) -> Any:
    notifier = Notifier.model_validate({"type": "webhook", "url": url})
    await deliver(session, notifier, {}, "application/json", idempotency_key="k", secret=None)


OUTGOING: dict[str, Callable[[str, HttpTransport], Awaitable[Any]]] = {
    "webhook": _hook,
    "router": _route,
    "notifier": _alert,
}


@pytest.mark.parametrize("caller", list(OUTGOING), ids=list(OUTGOING))
async def test_other_outgoing_calls_always_verify_tls(tmp_path: Path, caller: str) -> None:
    """Webhooks, the webhook router and notifiers refuse a self-signed certificate."""
    async with https_server(tmp_path, b"{}") as url, make_transport() as session:
        try:
            result = await OUTGOING[caller](url + "/x", session)
        except (RouterError, WebhookError) as exc:
            result = exc
    if caller == "webhook":
        assert not result.ok and "certificate" in result.detail.lower(), result
    else:
        assert (
            isinstance(result, RouterError | WebhookError) and "certificate" in str(result).lower()
        )


# --------------------------------------------------------------------------- request size


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_request_bodies_beyond_the_limit_are_refused_with_413(
    tmp_path: Path, chunked: bool
) -> None:
    """A body over api.max_body_bytes is a JSON 413, declared or streamed, and starts nothing."""
    cfg = write_config(
        tmp_path,
        one_canary(),
        routers=MESH,
        api={"token_file": str(tmp_path / "api-token"), "max_body_bytes": 2048},
    )
    body = json.dumps({"revision": "v2", "metadata": {"pad": "x" * 4096}}).encode()

    async def stream() -> AsyncIterator[bytes]:
        for i in range(0, len(body), 512):
            yield body[i : i + 512]

    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    async with running_daemon(cfg) as daemon, aiohttp.ClientSession() as session:
        data: Any = stream() if chunked else body
        async with session.post(
            f"{api_url(cfg)}/api/v1/canaries/{KEY}/rollouts", data=data, headers=headers
        ) as resp:
            status, answer = resp.status, await resp.json()
        state = daemon.runners[KEY].state
    assert status == 413 and "larger than 2048 bytes" in answer["error"], (status, answer)
    assert state.phase is Phase.INITIALIZED


# --------------------------------------------------------------------------- listen address


def test_api_listens_on_loopback_unless_told_otherwise(tmp_path: Path) -> None:
    """Without ``listen`` (file or environment) the API address is 127.0.0.1:9879."""
    from canaryd.config.loader import load_config

    cfg = tmp_path / "c.yaml"
    cfg.write_text("routers: {mesh: {type: webhook, url: 'http://127.0.0.1:9/'}}\n")
    loaded = load_config(cfg, environ={})
    assert loaded.settings.listen_host_port == ("127.0.0.1", 9879)
    assert Settings.model_fields["listen"].default == "127.0.0.1:9879"


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def test_default_listen_accepts_loopback_connections_only(tmp_path: Path) -> None:
    """A daemon with the default address answers on 127.0.0.1 and not on the machine's address."""
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 9879)) == 0:
            pytest.skip("something else listens on 127.0.0.1:9879, the default port")
    cfg = write_config(tmp_path, one_canary(), routers=MESH)
    text = cfg.read_text()
    cfg.write_text("\n".join(line for line in text.splitlines() if not line.startswith("listen:")))
    other = _non_loopback_address()
    async with running_daemon(cfg):
        with socket.create_connection(("127.0.0.1", 9879), timeout=2):
            pass
        if other is not None:
            with socket.socket() as s:
                s.settimeout(2)
                assert s.connect_ex((other, 9879)) != 0, f"the API answers on {other}"


# --------------------------------------------------------------------------- every secret


class Secrets:
    """Distinct random secret strings, and the files holding them (mode 600)."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path
        self.values: dict[str, str] = {
            name: f"{name}-{secrets.token_hex(10)}"
            for name in (
                "api",
                "router",
                "hook",
                "notifier",
                "urlpath",
                "urlsig",
                "bearer",
                "password",
            )
        }

    def file(self, name: str, content: str | None = None) -> str:
        """Write a secret (or ``content``) to a 600 file; return its path."""
        return _secret(self.dir, f"{name}.secret", content or self.values[name], 0o600)

    def needles(self) -> dict[str, str]:
        """Every string that must not appear anywhere: the secrets and derived forms."""
        basic = base64.b64encode(f"metrics:{self.values['password']}".encode()).decode()
        return {**self.values, "basic-auth": basic}


def _echo(headers: Any, path_qs: str) -> str:
    """What a careless receiver puts in its error answers: the URL and the headers it got."""
    return f"rejected {path_qs} with " + ", ".join(f"{k}={v}" for k, v in headers.items())


async def test_a_full_rollout_leaves_no_secret_in_logs_events_state_or_api(
    tmp_path: Path, prometheus: PrometheusServer, unique_job: str
) -> None:
    """With every secret configured and receivers echoing them, no secret string escapes."""
    s = Secrets(tmp_path)
    assert prometheus.app is not None
    prometheus.app.set_many(
        [("sec_success", {"job": unique_job}, 99.9), ("sec_p99", {"job": unique_job}, 100)]
    )
    failures = {"prom": 2, "router": 1, "notifier": 2, "hook": 1}

    async def answer(request: web.Request, body: bytes) -> web.StreamResponse:
        kind = request.path.strip("/").split("/")[0]
        if kind in failures and failures[kind] > 0:
            failures[kind] -= 1
            return web.Response(
                status=401 if kind == "prom" else 500, text=_echo(request.headers, request.path_qs)
            )
        if kind == "prom":  # the rest goes to the real Prometheus
            async with (
                aiohttp.ClientSession() as session,
                session.post(
                    prometheus.url + request.path.removeprefix("/prom"),
                    data=body,
                    headers={"Content-Type": request.headers["Content-Type"]},
                ) as resp,
            ):
                return web.Response(
                    status=resp.status, body=await resp.read(), content_type="application/json"
                )
        return web.Response(text="ok")

    async with StandIn(answer) as server:
        cfg = _full_config(tmp_path, s, server.url, unique_job)
        log = tmp_path / "daemon.log"
        answers: list[str] = []
        proc = _spawn(cfg, log)
        try:
            answers += await _drive(api_url(cfg), s.values["api"])
            db_live = _db_bytes(tmp_path)
        finally:
            proc.send_signal(signal.SIGTERM)
            await anyio.to_thread.run_sync(proc.wait, 30)
    assert proc.returncode == 0
    assert failures == {"prom": 0, "router": 0, "notifier": 0, "hook": 0}, (
        "some fault was never hit"
    )
    text = log.read_text()
    assert "HTTP 401" in text and "rejected" in text, "the echoed errors should reach the log"
    places = {
        "log": text.encode(),
        "state db (live)": db_live,
        "state db": _db_bytes(tmp_path),
        "api": "\n".join(answers).encode(),
    }
    leaks = {
        (name, where)
        for name, needle in s.needles().items()
        for where, blob in places.items()
        if needle.encode() in blob
    }
    assert not leaks, f"secrets found: {sorted(leaks)}"


def _spawn(cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    """``canaryd run`` with its stdout (the JSON log) going to ``log``."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "canaryd", "run", "-c", str(cfg)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CANARYD_LOG_FORMAT": "json"},
        )


def _db_bytes(tmp_path: Path) -> bytes:
    """The state database as stored: main file, WAL and shared memory."""
    return b"".join(p.read_bytes() for p in sorted(tmp_path.glob("state.db*")) if p.is_file())


def _full_config(tmp_path: Path, s: Secrets, url: str, job: str) -> Path:
    """A config using every kind of secret, all of it pointing at one echoing stand-in."""
    signed = f"{url}/notifier/{s.values['urlpath']}?sig={s.values['urlsig']}"
    hook = {"timeout": "2s", "secret_file": s.file("hook")}
    canary = {
        "name": "web",
        "namespace": "prod",
        "target": job,
        "router": "mesh",
        "analysis": {
            "interval": "0.3s",
            "threshold": 5,
            "stepWeight": 50,
            "metrics": [
                {
                    "name": "success-rate",
                    "templateRef": {"name": "success"},
                    "thresholdRange": {"min": 99},
                },
                {
                    "name": "latency",
                    "templateRef": {"name": "latency"},
                    "thresholdRange": {"max": 500},
                },
            ],
            "webhooks": [
                {"name": "smoke", "type": "rollout", "url": f"{url}/hook/rollout", **hook},
                {"name": "events", "type": "event", "url": f"{url}/hook/events", **hook},
                {"name": "done", "type": "post-rollout", "url": f"{url}/hook/done", **hook},
            ],
        },
        "alerts": [{"name": "pager", "notifier": "pager"}],
    }
    cfg = write_config(
        tmp_path,
        [canary],
        api={"token_file": s.file("api")},
        providers={
            "prom": {
                "type": "prometheus",
                "address": f"{url}/prom",
                "timeout": "2s",
                "bearer_token_file": s.file("bearer"),
            },
            "prom2": {
                "type": "prometheus",
                "address": f"{url}/prom",
                "timeout": "2s",
                "username": "metrics",
                "password_file": s.file("password"),
            },
        },
        routers={
            "mesh": {
                "type": "webhook",
                "url": f"{url}/router",
                "timeout": "2s",
                "secret_file": s.file("router"),
            }
        },
        notifiers={
            "pager": {
                "type": "webhook",
                "url_file": s.file("url", signed),
                "secret_file": s.file("notifier"),
            }
        },
        templates={
            "success": {"provider": "prom", "query": 'max(sec_success{job="{{ target }}"})'},
            "latency": {"provider": "prom2", "query": 'max(sec_p99{job="{{ target }}"})'},
        },
        outbox={"initialBackoff": "0.1s", "maxBackoff": "0.5s", "pollInterval": "0.1s"},
    )
    return cfg


async def _drive(url: str, token: str) -> list[str]:
    """Run one rollout through the API and collect every answer the API gave."""
    answers: list[str] = []
    auth = {"Authorization": f"Bearer {token}"}
    base = f"{url}/api/v1/canaries/{KEY}"
    async with aiohttp.ClientSession() as session:

        async def fetch(method: str, path: str, headers: dict[str, str], body: Any = None) -> Any:
            async with session.request(method, path, headers=headers, json=body) as resp:
                text = await resp.text()
            answers.append(text)
            return json.loads(text) if text.startswith(("{", "[")) else text

        await eventually(
            lambda: fetch("GET", f"{url}/readyz", {}),
            lambda v: v.get("status") == "ready",
            within=30,
        )
        for bad in (f"Bearer {token}x", f"Bearer {token[:-2]}", f"Basic {token}"):
            await fetch("POST", f"{base}/rollouts", {"Authorization": bad}, {"revision": "v2"})
        await fetch(
            "POST", f"{base}/rollouts", auth, {"revision": "v2", "metadata": {"ticket": "OPS-1"}}
        )
        deadline = time.monotonic() + 30
        while (state := await fetch("GET", base, auth))["phase"] not in ("Succeeded", "Failed"):
            assert time.monotonic() < deadline, state
            await anyio.sleep(0.2)
        assert state["phase"] == "Succeeded", state
        await eventually(
            lambda: fetch("GET", f"{url}/metrics", {}),
            lambda text: (
                re.search(r'canaryd_outbox_messages\{status="pending"\} 0(\.0)?\n', text)
                is not None
            ),
            within=15,
        )
        for path in (
            "/api/v1/canaries",
            f"/api/v1/canaries/{KEY}",
            "/api/v1/openapi.json",
            "/metrics",
            "/healthz",
            "/readyz",
        ):
            await fetch("GET", url + path, auth)
        await fetch("POST", f"{base}/abort", auth)
    return answers


@pytest.mark.parametrize("offset", [0, 160, 178, 190, 199], ids=lambda n: f"echo-at-{n}")
async def test_a_signed_url_echoed_at_the_preview_cut_leaves_no_part_of_it(offset: int) -> None:
    """An error answer that repeats the notifier's secret URL keeps no fragment of its token."""
    token = secrets.token_hex(16)

    async def echo(request: web.Request, body: bytes) -> web.StreamResponse:
        return web.Response(status=500, text="x" * offset + request.path_qs)

    async with StandIn(echo) as server, make_transport() as session:
        url = f"{server.url}/services/{token}?sig={token[::-1]}"
        notifier = Notifier.model_validate({"type": "slack", "url": url})
        with pytest.raises(WebhookError) as info:
            await deliver(
                session, notifier, {}, "application/json", idempotency_key="k", secret=None
            )
    message = str(info.value)
    fragments = {t[i : i + 6] for t in (token, token[::-1]) for i in range(len(t) - 5)}
    assert not [f for f in fragments if f in message], message
    assert "HTTP 500" in message
