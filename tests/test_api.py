"""The HTTP API of a real in-process daemon: auth, JSON errors, limits, OpenAPI document."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from daemons import TOKEN, api_url, running_daemon
from openapi_spec_validator import validate
from service_helpers import backends, canary, service_config
from support import eventually

from canaryd.config.loader import load_config
from canaryd.service.api import make_app
from canaryd.service.daemon import Daemon
from canaryd.service.openapi import document

pytestmark = pytest.mark.anyio

AUTH = {"Authorization": f"Bearer {TOKEN}"}


@dataclass
class Api:
    """A running daemon and an HTTP session to it."""

    daemon: Daemon
    url: str
    session: aiohttp.ClientSession

    async def call(
        self, method: str, path: str, *, auth: bool = True, **kw: Any
    ) -> tuple[int, Any, aiohttp.ClientResponse]:
        """Send a request; return status, decoded JSON body (or text) and the response."""
        headers = dict(AUTH) if auth else {}
        headers.update(kw.pop("headers", {}))
        async with self.session.request(method, self.url + path, headers=headers, **kw) as r:
            body = await r.json() if r.content_type == "application/json" else await r.text()
            return r.status, body, r


async def _api(tmp_path: Path, **top: Any) -> AsyncIterator[Api]:
    async with backends() as (prom, router):
        cfg = service_config(
            tmp_path, prom, router, [canary(interval="1h", manual_promotion=True)], **top
        )
        async with running_daemon(cfg) as daemon, aiohttp.ClientSession() as session:
            yield Api(daemon, api_url(cfg), session)


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    """A daemon with one canary ``prod/web`` (interval 1h), reads need the token."""
    async for a in _api(tmp_path):
        yield a


@pytest.fixture
async def open_api(tmp_path: Path) -> AsyncIterator[Api]:
    """The same daemon with ``api.anonymous_read: true``."""
    async for a in _api(
        tmp_path, api={"token_file": str(tmp_path / "api-token"), "anonymous_read": True}
    ):
        yield a


# --------------------------------------------------------------------------- OpenAPI


def test_openapi_document_is_valid() -> None:
    """The served OpenAPI document passes openapi-spec-validator."""
    validate(document())


async def test_openapi_paths_are_the_app_routes(tmp_path: Path) -> None:
    """Every API route of the app is documented with its method, and nothing else is.

    The dashboard's pages under ``/ui`` are not API (docs/api.md, "Dashboard").
    """
    async with backends() as (prom, router):
        cfg = service_config(tmp_path, prom, router, [canary()])
        app = make_app(Daemon(cfg, load_config(cfg)))
    routes = {
        (route.method.lower(), re.sub(r"\{(\w+):[^}]*\}", r"{\1}", route.resource.canonical))
        for route in app.router.routes()
        if route.method != "HEAD"
        and route.resource is not None
        and not route.resource.canonical.startswith("/ui")
    }
    documented = {(m, p) for p, ops in document()["paths"].items() for m in ops}
    assert routes == documented


async def test_openapi_is_served(api: Api) -> None:
    """``GET /api/v1/openapi.json`` answers the document, without a token."""
    status, body, _ = await api.call("GET", "/api/v1/openapi.json", auth=False)
    assert (status, body) == (200, document())


# --------------------------------------------------------------------------- auth


@pytest.mark.parametrize(
    ("method", "path", "auth", "status"),
    [
        ("GET", "/healthz", False, 200),
        ("GET", "/readyz", False, 200),
        ("GET", "/metrics", False, 200),
        ("GET", "/api/v1/canaries", False, 401),
        ("GET", "/api/v1/canaries", True, 200),
        ("GET", "/api/v1/canaries/prod/web", False, 401),
        ("GET", "/api/v1/canaries/prod/web", True, 200),
        ("POST", "/api/v1/canaries/prod/web/pause", False, 401),
    ],
    ids=[
        "healthz-open",
        "readyz-open",
        "metrics-open",
        "list-needs-token",
        "list-with-token",
        "get-needs-token",
        "get-with-token",
        "command-needs-token",
    ],
)
async def test_reads_need_the_token_by_default(
    api: Api, method: str, path: str, auth: bool, status: int
) -> None:
    """Without anonymous_read, only health, readiness, metrics and the document are open."""
    got, body, response = await api.call(method, path, auth=auth)
    assert got == status
    if status == 401:
        assert body == {"error": "missing or wrong bearer token"}
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("GET", "/api/v1/canaries", 200),
        ("GET", "/api/v1/canaries/prod/web", 200),
        ("POST", "/api/v1/canaries/prod/web/pause", 401),
    ],
    ids=["list", "get", "command-still-needs-token"],
)
async def test_anonymous_read_opens_reads_only(
    open_api: Api, method: str, path: str, status: int
) -> None:
    """With anonymous_read, reads need no token but commands still do."""
    got, _, _ = await open_api.call(method, path, auth=False)
    assert got == status


@pytest.mark.parametrize(
    "header",
    ["Bearer wrong", "Basic dGVzdA==", f"Bearer {TOKEN}x", "Bearer"],
    ids=["wrong-token", "basic-scheme", "token-prefix", "empty-token"],
)
async def test_a_wrong_token_is_refused(api: Api, header: str) -> None:
    """Anything but the exact bearer token is a JSON 401."""
    status, body, _ = await api.call(
        "POST", "/api/v1/canaries/prod/web/pause", auth=False, headers={"Authorization": header}
    )
    assert (status, body) == (401, {"error": "missing or wrong bearer token"})


async def test_token_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``api.token_env`` names the variable holding the token."""
    monkeypatch.setenv("TEST_CANARYD_TOKEN", "from-env-123")
    async for api in _api(tmp_path, api={"token_env": "TEST_CANARYD_TOKEN"}):
        env_auth = {"Authorization": "Bearer from-env-123"}
        status, _, _ = await api.call("GET", "/api/v1/canaries", auth=False, headers=env_auth)
        assert status == 200
        status, _, _ = await api.call("GET", "/api/v1/canaries")
        assert status == 401


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("method", "path", "kw", "status", "error"),
    [
        ("GET", "/nope", {}, 404, "Not Found"),
        ("GET", "/api/v1/canaries/prod/nope", {}, 404, "no canary prod/nope"),
        ("POST", "/api/v1/canaries/prod/nope/pause", {}, 404, "no canary prod/nope"),
        ("DELETE", "/api/v1/canaries", {}, 405, "Method Not Allowed"),
        (
            "POST",
            "/api/v1/canaries/prod/web/rollouts",
            {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
            400,
            None,
        ),
        (
            "POST",
            "/api/v1/canaries/prod/web/rollouts",
            {"json": [1, 2]},
            400,
            "body must be a JSON object",
        ),
        (
            "POST",
            "/api/v1/canaries/prod/web/rollouts",
            {"data": b"[" * 30_000, "headers": {"Content-Type": "application/json"}},
            400,
            "body is not valid JSON: nested too deeply",
        ),
        (
            "POST",
            "/api/v1/canaries/prod/web/rollouts",
            {"data": b'{"revision": "v2", "metadata": ' + b'{"a":' * 6_000 + b"1" + b"}" * 6_001},
            400,
            "body is not valid JSON: nested too deeply",
        ),
        (
            "POST",
            "/api/v1/canaries/prod/web/rollouts",
            {"json": {"revision": "v2", "extra": 1}},
            400,
            "unknown keys: extra",
        ),
        (
            "POST",
            "/api/v1/canaries/prod/web/rollouts",
            {"json": {"revision": "v2\n"}},
            400,
            "revision must be a string of 1-128 letters, digits or ._:/@+-",
        ),
        (
            "POST",
            "/api/v1/canaries/prod/web/rollouts",
            {"json": {"revision": "v2", "metadata": {"a": 1}}},
            400,
            "metadata must be an object of strings",
        ),
        (
            "POST",
            "/api/v1/canaries/prod/web/rollouts",
            {"data": b"x" * 70_000},
            413,
            "request body larger than 65536 bytes",
        ),
        ("POST", "/api/v1/canaries/prod/web/resume", {}, 409, None),
        ("POST", "/api/v1/canaries/prod/web/gates/promotion/approve", {}, 409, None),
    ],
    ids=[
        "unknown-route",
        "unknown-canary",
        "command-unknown-canary",
        "wrong-method",
        "invalid-json",
        "not-an-object",
        "nested-30000-deep",
        "nested-metadata",
        "unknown-key",
        "revision-with-newline",
        "metadata-not-strings",
        "body-too-large",
        "resume-not-paused",
        "approve-without-rollout",
    ],
)
async def test_errors_are_json(
    api: Api, method: str, path: str, kw: dict[str, Any], status: int, error: str | None
) -> None:
    """Every failure is ``{"error": ...}`` with the documented status, never a 500."""
    got, body, response = await api.call(method, path, **kw)
    assert got == status
    assert response.content_type == "application/json"
    assert isinstance(body, dict) and set(body) == {"error"}
    if error is not None:
        assert body["error"] == error
    if status == 405:
        assert response.headers["Allow"] == "GET,HEAD"


# --------------------------------------------------------------------------- commands


async def test_rollout_and_commands_change_the_state(api: Api) -> None:
    """A rollout starts with 201, the same revision again answers 200, a new one restarts with
    201; pause, resume and abort answer the new state."""
    base = "/api/v1/canaries/prod/web"
    status, body, _ = await api.call(
        "POST", base + "/rollouts", json={"revision": "v2", "metadata": {"by": "ci"}}
    )
    assert (status, body["phase"], body["revision"], body["metadata"]) == (
        201,
        "Progressing",
        "v2",
        {"by": "ci"},
    )
    status, body, _ = await api.call("POST", base + "/rollouts", json={"revision": "v2"})
    assert (status, body["revision"]) == (200, "v2"), "the same revision again is a no-op"
    status, body, _ = await api.call("POST", base + "/rollouts", json={"revision": "v3"})
    assert (status, body["revision"], body["canaryWeight"]) == (201, "v3", 0), "restarted"
    for action, phase in (("pause", "Paused"), ("resume", "Progressing"), ("abort", "Failed")):
        status, body, _ = await api.call("POST", f"{base}/{action}")
        assert (status, body["phase"]) == (200, phase), action


async def test_detail_has_checks_events_and_last_check(api: Api) -> None:
    """The detail view lists checks and events, newest first, and the last check."""
    base = "/api/v1/canaries/prod/web"
    await api.call("POST", base + "/rollouts", json={"revision": "v2"})  # wakes one tick

    async def checked() -> Any:
        _, body, _ = await api.call("GET", base)
        return body if body["checks"] else None

    body = await eventually(checked, what="a check record")
    assert body["lastCheck"] == {k: body["checks"][0][k] for k in ("time", "outcome", "reason")}
    assert body["events"][0]["canary"] == "prod/web"
    assert [e["event"] for e in body["events"]][-1] == "rollout.started"


async def test_readyz_is_503_when_not_ready(api: Api) -> None:
    """``/readyz`` answers 503 JSON while the daemon is not ready (stopping, starting)."""
    api.daemon.ready = False
    status, body, _ = await api.call("GET", "/readyz", auth=False)
    assert (status, body) == (503, {"error": "not ready"})


async def test_promote_needs_force_to_skip_a_closed_gate(api: Api) -> None:
    """promote past the closed confirm-promotion gate is 409 unless forced; the forced answer
    and event say which gate was skipped."""
    base = "/api/v1/canaries/prod/web"
    await api.call("POST", base + "/rollouts", json={"revision": "v2"})
    status, body, _ = await api.call("POST", base + "/promote")
    assert status == 409 and "--force" in body["error"]
    status, body, _ = await api.call("POST", base + "/promote", json={"force": "yes"})
    assert (status, body["error"]) == (400, "force must be true or false")
    status, body, _ = await api.call("POST", base + "/promote", json={"force": True})
    assert (status, body["phase"], body["forced"], body["skippedGates"]) == (
        200,
        "Promoting",
        True,
        ["promotion"],
    )
    _, detail, _ = await api.call("GET", base)
    promoting = next(e for e in detail["events"] if e["event"] == "rollout.promoting")
    assert promoting["forced"] is True and promoting["skippedGates"] == ["promotion"]


async def test_approving_a_gate_the_canary_lacks_is_refused(api: Api) -> None:
    """approve --gate rollout on a canary with only a promotion gate answers 409 and records
    nothing."""
    base = "/api/v1/canaries/prod/web"
    await api.call("POST", base + "/rollouts", json={"revision": "v2"})
    status, body, _ = await api.call("POST", base + "/gates/rollout/approve")
    assert status == 409 and body["error"].startswith("prod/web has no rollout gate")
    _, detail, _ = await api.call("GET", base)
    assert detail["approvals"] == []


async def test_a_command_whose_route_fails_answers_the_router_error(tmp_path: Path) -> None:
    """promote while the router answers 500 is a 502 carrying the router's message, adds no
    failed check, and says the promotion has begun (the router may have applied it)."""
    async with backends() as (prom, router):
        cfg = service_config(tmp_path, prom, router, [canary(interval="1h")])
        async with running_daemon(cfg) as daemon, aiohttp.ClientSession() as session:
            api = Api(daemon, api_url(cfg), session)
            base = "/api/v1/canaries/prod/web"
            await api.call("POST", base + "/rollouts", json={"revision": "v2"})

            async def advanced() -> Any:
                _, detail, _ = await api.call("GET", base)
                return detail["canaryWeight"] == 10  # the tick the start woke is done

            await eventually(advanced, what="the first step")
            router.statuses = [500]
            status, body, _ = await api.call("POST", base + "/promote")
            assert status == 502 and "500" in body["error"]
            assert body["error"].startswith("router refused the command: promotion begun")
            _, detail, _ = await api.call("GET", base)
            assert (detail["phase"], detail["failedChecks"]) == ("Promoting", 0)
            assert detail["routePending"] is True
