"""The webhook router against a real HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from receiver import Receiver
from support import refused_port

from canaryd.config import WebhookRouter
from canaryd.errors import RouterError
from canaryd.http import HttpTransport, make_transport
from canaryd.routers import Action, RouteRequest
from canaryd.routers.webhook import WebhookRouterClient

SECRET = "s3cret-mesh-key"
AB_MATCH = [{"headers": {"x-canary": {"exact": "insider"}}}]


@pytest.fixture
async def session(anyio_backend: str) -> AsyncIterator[HttpTransport]:
    """canaryd's shared client session."""
    async with make_transport() as client:
        yield client


def route(
    action: Action = "route", match: list[dict[str, Any]] | None = None, key: str = "key-42"
) -> RouteRequest:
    """A router request for prod/web at 80/20."""
    return RouteRequest("prod/web", "v2.4.1", action, 80, 20, key, match or [])


def config(url: str, *, timeout: float = 2.0, **extra: Any) -> WebhookRouter:
    """A webhook router config entry for ``url``."""
    return WebhookRouter(type="webhook", url=url, timeout=timeout, **extra)


def verify(signature: str, body: bytes, secret: str) -> bool:
    """Check ``t=<unix>,v1=<hex>`` the way a receiver would, from the raw body."""
    fields = dict(part.split("=", 1) for part in signature.split(","))
    mac = hmac.new(secret.encode(), f"{fields['t']}.".encode() + body, hashlib.sha256)
    recent = abs(time.time() - int(fields["t"])) < 300
    return recent and hmac.compare_digest(mac.hexdigest(), fields["v1"])


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("action", "match", "expected_extra"),
    [
        ("route", None, {}),
        ("promote", None, {}),
        ("rollback", None, {}),
        ("route", AB_MATCH, {"match": AB_MATCH}),
    ],
    ids=["route", "promote", "rollback", "route-with-match"],
)
async def test_payload_shape(
    session: HttpTransport,
    action: Action,
    match: list[dict[str, Any]] | None,
    expected_extra: dict[str, Any],
) -> None:
    """The controller receives exactly the documented fields; match only when non-empty."""
    async with Receiver() as receiver:
        await WebhookRouterClient(config(receiver.url + "/routes"), session).apply(
            route(action, match)
        )

    (request,) = receiver.requests
    assert request.method == "POST"
    assert request.path == "/routes"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json == {
        "canary": "prod/web",
        "revision": "v2.4.1",
        "action": action,
        "primaryWeight": 80,
        "canaryWeight": 20,
        **expected_extra,
    }


@pytest.mark.anyio
async def test_retries_keep_idempotency_key(session: HttpTransport) -> None:
    """Two 503s then a 200: applied, and all three attempts carry the request's key."""
    async with Receiver(statuses=[503, 503, 200]) as receiver:
        await WebhookRouterClient(config(receiver.url), session).apply(route(key="decision-7"))

    assert [r.headers["Idempotency-Key"] for r in receiver.requests] == ["decision-7"] * 3


@pytest.mark.anyio
@pytest.mark.parametrize("source", ["secret_file", "secret_env"], ids=["file", "env"])
async def test_signature_verifies_against_raw_body(
    session: HttpTransport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    """With a secret configured, every request is signed over its raw body."""
    secret_file = tmp_path / "mesh.key"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    monkeypatch.setenv("MESH_KEY", SECRET)
    extra: dict[str, Any] = (
        {"secret_file": str(secret_file)} if source == "secret_file" else {"secret_env": "MESH_KEY"}
    )

    async with Receiver() as receiver:
        await WebhookRouterClient(config(receiver.url, **extra), session).apply(route())

    (request,) = receiver.requests
    assert verify(request.headers["X-Canaryd-Signature"], request.body, SECRET)


@pytest.mark.anyio
async def test_configured_headers_are_sent(session: HttpTransport) -> None:
    """Headers from the config go out with every request; no signature without a secret."""
    async with Receiver() as receiver:
        cfg = config(receiver.url, headers={"X-Team": "payments"})
        await WebhookRouterClient(cfg, session).apply(route())

    (request,) = receiver.requests
    assert request.headers["X-Team"] == "payments"
    assert "X-Canaryd-Signature" not in request.headers


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("statuses", "message", "attempts"),
    [
        ([503], "router mesh: HTTP 503: overloaded (after 3 attempts)", 3),
        ([500, 429], "router mesh: HTTP 429: overloaded (after 3 attempts)", 3),
        ([422], "router mesh: HTTP 422: overloaded (after 1 attempt)", 1),
    ],
    ids=["503-every-time", "5xx-then-429", "422-not-retried"],
)
async def test_failure_reports_status_and_body(
    session: HttpTransport, statuses: list[int], message: str, attempts: int
) -> None:
    """A non-2xx answer ends in a RouterError with status and body, never the URL path."""
    async with Receiver(statuses=statuses, body="overloaded\n") as receiver:
        router = WebhookRouterClient(config(receiver.url + "/secret-path"), session, name="mesh")
        with pytest.raises(RouterError) as info:
            await router.apply(route())

    assert str(info.value) == message
    assert len(receiver.requests) == attempts


@pytest.mark.anyio
async def test_silent_receiver_fails_within_budget(session: HttpTransport) -> None:
    """A receiver that never answers gives a RouterError within timeout * 3."""
    async with Receiver(delay=30) as receiver:
        router = WebhookRouterClient(config(receiver.url + "/secret-path", timeout=0.3), session)
        started = time.monotonic()
        with pytest.raises(RouterError, match=r"^router 127\.0\.0\.1: .*no answer within") as info:
            await router.apply(route())
        elapsed = time.monotonic() - started

    assert elapsed < router.budget + 0.5
    assert "secret-path" not in str(info.value)


@pytest.mark.anyio
async def test_unreadable_secret_is_a_router_error(session: HttpTransport, tmp_path: Path) -> None:
    """A secret file readable by others is refused when the router is built."""
    secret_file = tmp_path / "mesh.key"
    secret_file.write_text(SECRET)
    secret_file.chmod(0o644)

    with pytest.raises(RouterError, match=r"^router mesh: secret file .* is readable by others"):
        WebhookRouterClient(
            config("http://127.0.0.1:1/", secret_file=str(secret_file)), session, name="mesh"
        )


@pytest.mark.anyio
async def test_unreachable_receiver_is_a_router_error(session: HttpTransport) -> None:
    """Connection refused on every attempt ends in a RouterError naming the host only."""
    port = refused_port()
    router = WebhookRouterClient(
        config(f"http://127.0.0.1:{port}/secret-path"), session, name="mesh"
    )

    with pytest.raises(RouterError) as info:
        await router.apply(route())

    assert str(info.value).startswith(f"router mesh: http://127.0.0.1:{port}/…: ")
    assert str(info.value).endswith("(after 3 attempts)")
    assert "secret-path" not in str(info.value)
