"""Security: no secret string escapes into logs, events, state or API answers.

The full-secrets test runs a real daemon process with every kind of secret
configured (API token, router, webhook and notifier signing secrets, a
notifier ``url_file`` holding a signed URL, Prometheus bearer and basic-auth
credentials) against receivers that echo what they got back in their error
answers, and then greps the process's log, the state database's bytes and
every API answer for each secret string.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from daemons import api_url, write_config
from faults import StandIn
from prom import PrometheusServer
from security_helpers import KEY, secret_file
from support import eventually

from canaryd.config import Notifier
from canaryd.errors import WebhookError
from canaryd.http import make_transport
from canaryd.notifiers import deliver

pytestmark = pytest.mark.anyio


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
        return secret_file(self.dir, f"{name}.secret", content or self.values[name], 0o600)

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


def _signed_canary(s: Secrets, url: str, job: str) -> dict[str, Any]:
    """Canary ``prod/web`` on ``job`` whose rollout, event and post-rollout hooks sign."""
    hook = {"timeout": "2s", "secret_file": s.file("hook")}
    return {
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


def _full_config(tmp_path: Path, s: Secrets, url: str, job: str) -> Path:
    """A config using every kind of secret, all of it pointing at one echoing stand-in."""
    signed = f"{url}/notifier/{s.values['urlpath']}?sig={s.values['urlsig']}"
    cfg = write_config(
        tmp_path,
        [_signed_canary(s, url, job)],
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
