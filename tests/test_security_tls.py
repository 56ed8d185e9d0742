"""Security: TLS is verified on every outgoing call unless one of two keys says otherwise."""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from pydantic import BaseModel
from structlog.testing import capture_logs
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
from canaryd.service.webhooks import call as call_webhook

pytestmark = pytest.mark.anyio


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
